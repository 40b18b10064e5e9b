"""Image references, pins and container settings that need no engine
(the engine itself: tests/integration/test_docker.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ftc.errors import EngineUnavailable, ExitCode, UsageError

pytest.importorskip("docker")


@pytest.mark.parametrize(
    "ref, parts",
    [
        ("ubuntu", ("ubuntu", None, None)),
        ("ftc-runtime:0.1.0-cpu", ("ftc-runtime", "0.1.0-cpu", None)),
        ("127.0.0.1:5000/team/ftc:v1", ("127.0.0.1:5000/team/ftc", "v1", None)),
        ("127.0.0.1:5000/ftc@sha256:" + "a" * 64, ("127.0.0.1:5000/ftc", None, "sha256:" + "a" * 64)),
        ("ghcr.io/o/ftc:v1@sha256:" + "b" * 64, ("ghcr.io/o/ftc", "v1", "sha256:" + "b" * 64)),
    ],
)
def test_split_reference(ref, parts):
    from ftc.images.engine import split_reference

    assert split_reference(ref) == parts


def test_a_reference_with_a_digest_is_pinned_without_asking_an_engine(monkeypatch):
    from ftc.images.engine import pin_image

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    digest = "sha256:" + "c" * 64
    assert pin_image(f"ghcr.io/o/ftc:v1@{digest}") == {
        "ref": f"ghcr.io/o/ftc@{digest}",
        "requested": f"ghcr.io/o/ftc:v1@{digest}",
        "pinned": True,
        "pin_kind": "repo-digest",
        "digest": digest,
    }


def test_no_engine_is_a_clear_error(monkeypatch):
    from ftc.images.engine import pin_image

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(EngineUnavailable) as err:
        pin_image("ftc-runtime:cpu")
    assert err.value.exit_code == ExitCode.ENGINE_UNAVAILABLE == 13
    assert str(err.value).startswith(
        "pinning image ftc-runtime:cpu: no container engine answers at unix:///nonexistent/docker.sock"
    )


@pytest.mark.parametrize("given, requests", [("none", 0), ("all", -1), ("2", 2), ("auto", None)])
def test_gpu_requests(given, requests):
    from ftc.runtime.launch.docker import GpuRequest

    made = GpuRequest.parse(given).device_requests({"Runtimes": {"runc": {}}})
    if requests in (0, None):  # auto on an engine without the NVIDIA runtime: none
        assert made == []
    else:
        assert [r["Count"] for r in made] == [requests] and made[0]["Capabilities"] == [["gpu"]]
    if given == "auto":
        assert GpuRequest.parse("auto").device_requests({"Runtimes": {"nvidia": {}}})[0]["Count"] == -1


@pytest.mark.parametrize("bad", ["0", "-1", "many", ""])
def test_a_bad_gpu_request_is_a_usage_error(bad):
    from ftc.runtime.launch.docker import GpuRequest

    with pytest.raises(UsageError, match="give auto, all, none or a number"):
        GpuRequest.parse(bad)


def test_mounts_nest_and_writable_folders_stay_writable(tmp_path, monkeypatch):
    from ftc.runtime.launch.docker import container_mounts

    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "job" / "data").mkdir(parents=True)
    (tmp_path / "weights").mkdir()
    plan = tmp_path / "job" / "plan.json"
    output = tmp_path / "job" / "runs" / "x"
    made = container_mounts(
        plan, {"train": tmp_path / "job" / "data", "base_model": tmp_path / "weights", "hub": "org/model"}, output, ()
    )
    assert [(m["Source"], m["Target"] == m["Source"], m["ReadOnly"]) for m in made] == [
        (str(tmp_path / "job"), True, True),  # data/ comes with the plan's folder
        (str(tmp_path / "weights"), True, True),
        (str(tmp_path / "cache"), True, False),
        (str(output), True, False),  # writable inside the read-only plan folder
    ]
    with pytest.raises(UsageError, match="--mount /nonexistent/x: no such file or folder"):
        container_mounts(plan, {}, output, ("/nonexistent/x",))


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("ubuntu", "docker.io/library/ubuntu", True),  # podman spells Docker Hub names out in RepoDigests
        ("acme/ftc", "docker.io/acme/ftc", True),
        ("127.0.0.1:5000/ftc", "127.0.0.1:5000/ftc", True),
        ("localhost/ftc", "docker.io/localhost/ftc", False),
        ("ghcr.io/acme/ftc", "docker.io/acme/ftc", False),
    ],
)
def test_repository_names_compare_as_the_engine_means_them(a, b, same):
    from ftc.images.engine import same_repository

    assert same_repository(a, b) is same


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda plan: plan["output"].update(dir="~/runs/x"),
            "output_dir ~/runs/x: `~` would mean another folder inside the container",
        ),
        (
            lambda plan: plan["inputs"]["train"].update(uri="~/data/train.jsonl"),
            "train: ~/data/train.jsonl: `~` would mean another folder",
        ),
        (
            lambda plan: plan["inputs"]["base_model"].update(source="hub", uri="hf://org/model"),
            "base_model: hf://org/model comes from a model hub, which a container run does not reach",
        ),
    ],
)
def test_a_container_run_refuses_what_the_container_cannot_see(change, message):
    from ftc.runtime.launch.docker import refuse_what_a_container_cannot_see
    from ftc.spec.plan import PlanInput

    def typed(plan: dict) -> SimpleNamespace:  # the two fields of a Plan that the check reads
        inputs = {role: PlanInput(pinned=True, **item) for role, item in plan["inputs"].items()}
        return SimpleNamespace(output_dir=plan["output"]["dir"], inputs=inputs)

    plan = {
        "output": {"dir": "runs/x"},
        "inputs": {
            "train": {"source": "local", "uri": "data/train.jsonl"},
            "base_model": {"source": "local", "uri": "model"},
        },
    }
    refuse_what_a_container_cannot_see(typed(plan))
    change(plan)
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        refuse_what_a_container_cannot_see(typed(plan))
