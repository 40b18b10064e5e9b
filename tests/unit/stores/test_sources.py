"""Input source kinds (ftc.stores.sources): the one list of kinds agrees with the contract, a spec's location goes to
the kind that takes it, and each kind answers what the runtime, the launchers and lineage ask of its inputs."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from ftc.spec.model import DvcLocation, DvcRef
from ftc.spec.plan import PlanFile, PlanInput
from ftc.stores.sources import SOURCES, InputNotFound, ResolveContext, kind_named, resolve_location

from conftest import REPO


def _enum(schema: str, *path: str) -> list[str]:
    node = json.loads((REPO / "spec" / schema).read_text(encoding="utf-8"))
    for key in path:
        node = node[key]
    return node["enum"]


def test_the_kinds_are_the_ones_plans_and_lineage_records_name():
    hints = typing.get_type_hints(PlanInput)
    assert list(SOURCES) == list(typing.get_args(hints["source"]))
    assert list(SOURCES) == _enum("lineage.schema.json", "$defs", "source", "properties", "source")
    plan_schema = json.loads((REPO / "spec" / "plan.schema.json").read_text(encoding="utf-8"))
    enums = [e for e in _walk(plan_schema) if "local" in e]
    assert enums == [list(SOURCES)]
    assert all(kind.name == name for name, kind in SOURCES.items())


def _walk(node):
    if isinstance(node, dict):
        if isinstance(node.get("enum"), list):
            yield node["enum"]
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize(
    ("location", "kind"),
    [
        ("data/train.jsonl", "local"),
        ("/abs/train.jsonl", "local"),
        ("file:///abs/train.jsonl", "local"),
        ("FILE:///abs/train.jsonl", "local"),
        ("s3://bucket/train.jsonl", "s3"),
        ("gs://bucket/weights/", "gcs"),
        (DvcLocation(DvcRef("data/train.jsonl", None, None, None)), "dvc"),
    ],
)
def test_a_location_is_taken_by_exactly_one_kind(location, kind):
    assert [name for name, k in SOURCES.items() if k.takes(location)] == [kind]


def test_a_location_no_kind_takes_is_refused_with_a_fix(tmp_path):
    ctx = ResolveContext(base_dir=tmp_path, plan_dir=tmp_path)
    with pytest.raises(InputNotFound, match=r"^https:// inputs are not supported by this version of ftc$") as caught:
        resolve_location("https://example.com/train.jsonl", ctx)
    assert caught.value.hint == "copy the input to a local path and point the spec at it"


def test_a_local_location_is_pinned_by_the_local_kind(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"messages": []}\n')
    resolved = resolve_location("file://train.jsonl", ResolveContext(base_dir=tmp_path, plan_dir=tmp_path))
    assert (resolved.entry.source, resolved.entry.uri, resolved.entry.kind) == ("local", "train.jsonl", "file")
    assert resolved.local_path == tmp_path / "train.jsonl"


def test_a_record_names_its_kind_or_nothing_ftc_knows():
    assert kind_named("gcs") is SOURCES["gcs"]
    for name in ("ftp", None, ["s3"], {"source": "s3"}, 3):  # a record read back is outside input
        assert kind_named(name) is None


def test_each_kind_gives_its_openlineage_namespace():
    assert SOURCES["local"].namespace({"source": "local", "location": "../data.jsonl"}) == "file"
    assert SOURCES["hub"].namespace({"source": "hub", "uri": "hf://org/model"}) == "hf"
    assert SOURCES["s3"].namespace({"source": "s3", "uri": "s3://bucket/a/b.jsonl"}) == "s3://bucket"
    assert SOURCES["gcs"].namespace({"source": "gcs", "uri": "gs://bkt/w/"}) == "gs://bkt"
    assert SOURCES["gcs"].namespace({"source": "gcs"}) == "gcs"
    assert SOURCES["dvc"].namespace({"source": "dvc", "pin": {"repo": "../repo"}}) == "dvc:../repo"


def test_what_a_container_and_a_cluster_cannot_read_is_said_by_the_kind():
    hub = PlanInput("hub", "hf://org/model", pinned=False)
    home = PlanInput("local", "~/data.jsonl", pinned=True, kind="file", digest="sha256:" + "0" * 64, size=1)
    near = PlanInput("local", "data/train.jsonl", pinned=True, kind="file", digest="sha256:" + "0" * 64, size=1)
    far = PlanInput("local", "../train.jsonl", pinned=True, kind="file", digest="sha256:" + "0" * 64, size=1)
    pin = {"repo": ".", "rev": "v1", "commit": "a" * 40, "md5": "b" * 32}
    dvc_disk = PlanInput(
        "dvc", "d@aaaa", pinned=True, kind="file", digest="sha256:" + "0" * 64, size=1, pin=pin | {"remote": "/srv/dvc"}
    )
    dvc_s3 = PlanInput(
        "dvc",
        "d@aaaa",
        pinned=True,
        kind="file",
        digest="sha256:" + "0" * 64,
        size=1,
        pin=pin | {"remote": "s3://b/dvc"},
    )

    def container(item):
        return SOURCES[item.source].container_problem("train", item)

    def cluster(item):
        return SOURCES[item.source].cluster_problem("train", item)

    assert "comes from a model hub, which a container run does not reach" in container(hub)
    assert container(home) == (
        "train: ~/data.jsonl: `~` would mean another folder inside the container; "
        "write the path out (or make it relative to the spec) and recompile"
    )
    assert container(near) is None and container(dvc_disk) is None
    assert "the pods do not reach the hub" in cluster(hub)
    assert "is an absolute path" in cluster(home) and "is outside the plan folder" in cluster(far)
    assert "is a folder on this machine" in cluster(dvc_disk)
    assert cluster(near) is None and cluster(dvc_s3) is None
    assert (
        SOURCES["dvc"].endpoint(PlanInput("dvc", "d@a", pinned=True, pin=pin | {"endpoint": "http://e"})) == "http://e"
    )
    assert all(SOURCES[n].endpoint(near) is None for n in ("local", "s3", "gcs", "hub"))


def test_a_store_folder_is_fetched_object_by_object_by_its_pins():
    files = (
        PlanFile("config.json", 10, sha256="1" * 64, pin={"etag": '"e1"'}),
        PlanFile("w/a.bin", 20, sha256="2" * 64, pin={"etag": '"e2"'}),
    )
    item = PlanInput("s3", "s3://bucket/model", pinned=True, kind="dir", size=30, files=files)
    objects = SOURCES["s3"].objects(item)
    assert [(obj.uri, obj.path, obj.size, expected["sha256"]) for obj, _, expected in objects] == [
        ("s3://bucket/model/config.json", "config.json", 10, "1" * 64),
        ("s3://bucket/model/w/a.bin", "w/a.bin", 20, "2" * 64),
    ]
    kinds = {name for name, kind in SOURCES.items() if kind.fetched}
    assert kinds == {"s3", "gcs", "dvc"}
    assert {name for name, kind in SOURCES.items() if kind.on_disk} == {"local"}


def test_a_hub_input_is_found_as_its_model_id_and_a_local_one_by_its_bytes(tmp_path):
    from ftc.errors import InputChanged
    from ftc.stores.hashing import StatCache

    class Plan:  # only what finding an input asks of a plan: where its paths are
        def locate(self, uri: str) -> Path:
            return tmp_path / uri

    (tmp_path / "train.jsonl").write_text("one\n")
    hub = PlanInput("hub", "hf://org/model", pinned=False)
    local = PlanInput("local", "train.jsonl", pinned=True, kind="file", digest="sha256:" + "0" * 64, size=4)
    with StatCache() as cache:
        assert SOURCES["hub"].find("base_model", hub, Plan(), cache) == "org/model"
        with pytest.raises(InputChanged, match=r"train: .*train.jsonl changed since the plan was compiled"):
            SOURCES["local"].find("train", local, Plan(), cache)
