"""What `ftc image build` says of how `ftc compile` will pin the image it built: by image ID where the engine has no
registry digest for it (a fresh build: only this engine can run it), by registry digest where it has one, exactly as
the pin itself is made (the real engine: tests/integration/test_docker.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ftc.images.build import Built

pytest.importorskip("docker")

IMAGE_ID = "sha256:" + "1" * 64
DIGEST = "sha256:" + "2" * 64


def _built(tag: str, *repo_digests: str) -> Built:
    return Built(tag, IMAGE_ID, 1_450_000_000, 90.0, tuple(repo_digests))


def _pin(built: Built) -> dict:
    """What ftc compile pins for ``image: <tag>`` on an engine that holds this image."""
    from ftc.images.engine import pin_image

    image = SimpleNamespace(id=built.image_id, attrs={"RepoDigests": list(built.repo_digests)})
    client = SimpleNamespace(images=SimpleNamespace(get=lambda ref: image))
    return pin_image(built.tag, client=client)


@pytest.mark.parametrize(
    "built",
    [
        _built("ftc-runtime:0.1.0-cpu"),  # a fresh build: no registry has it
        _built("ftc-runtime:0.1.0-cpu", f"127.0.0.1:5000/ftc-runtime@{DIGEST}"),  # pushed under another name
    ],
)
def test_an_image_no_registry_knows_is_said_to_be_pinned_by_image_id(built):
    assert _pin(built)["pin_kind"] == "image-id"
    said = built.pinned_by()
    assert said.startswith("by its image ID, which only this engine has: push it to a registry")
    assert "digest" not in said.split(":")[0]


@pytest.mark.parametrize(
    "tag, found",
    [
        ("127.0.0.1:5000/ftc-runtime:0.1.0-cpu", f"127.0.0.1:5000/ftc-runtime@{DIGEST}"),
        ("ftc-runtime:0.1.0-cpu", f"docker.io/library/ftc-runtime@{DIGEST}"),  # the same repository, spelled out
    ],
)
def test_an_image_its_registry_knows_is_said_to_be_pinned_by_registry_digest(tag, found):
    built = _built(tag, found)
    assert _pin(built)["pin_kind"] == "repo-digest"
    assert built.pinned_by() == f"by its registry digest ({found})"
