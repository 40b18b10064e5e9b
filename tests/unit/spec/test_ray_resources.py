"""llmforge's Ray resource keys, `worker_resources` and `trainer_resources`: taken as written (a map of Ray resource
name -> amount), carried into the plan, and left out of it when absent or empty (such a spec keeps its plan_id)."""

from __future__ import annotations

import json

import pytest
import yaml

from ftc.errors import ExitCode

from conftest import read_json

#: the shapes llmforge's tested configs use
SHAPES = [
    {"accelerator_type:A10G": 0.001},
    {"anyscale/accelerator_shape:4xA10G": 0.001},
    {"memory": 53_687_091_200, "accelerator_type:A10G": 0.001},
]


@pytest.mark.parametrize("resources", SHAPES)
def test_llmforges_resource_shapes_are_carried_into_the_plan(job, ftc, tmp_path, resources):
    spec = job(worker_resources=resources, trainer_resources={"memory": 150_323_855_360})
    r = ftc("compile", spec, "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    carried = read_json(tmp_path / "p.json")["spec"]
    assert carried["worker_resources"] == resources
    assert carried["trainer_resources"] == {"memory": 150_323_855_360}


def test_yaml_numbers_written_with_underscores_as_llmforge_writes_them(job, ftc, tmp_path):
    text = job().read_text() + "trainer_resources:\n  memory: 150_323_855_360 # 140 GB memory\n"
    r = ftc("compile", job(text), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert read_json(tmp_path / "p.json")["spec"]["trainer_resources"] == {"memory": 150323855360}


def test_a_spec_without_them_has_no_such_keys_and_the_same_plan_as_with_empty_maps(job, ftc, tmp_path):
    assert ftc("compile", job(name="a.yaml"), "-o", tmp_path / "a.json").code == 0
    empty = job(name="b.yaml", worker_resources={}, trainer_resources={})
    assert ftc("compile", empty, "-o", tmp_path / "b.json").code == 0
    a, b = read_json(tmp_path / "a.json"), read_json(tmp_path / "b.json")
    assert "worker_resources" not in a["spec"] and "trainer_resources" not in a["spec"]
    assert a["plan_id"] == b["plan_id"] and a["spec_digest"] == b["spec_digest"]
    with_them = job(name="c.yaml", worker_resources={"accelerator_type:A10G": 0.001})
    assert ftc("compile", with_them, "-o", tmp_path / "c.json").code == 0
    assert read_json(tmp_path / "c.json")["plan_id"] != a["plan_id"]  # the plan says where it may run


def test_a_plan_with_them_reads_back_the_same(job, ftc, tmp_path):
    from ftc.spec.plan import read_plan

    spec = job(worker_resources={"accelerator_type:A10G": 0.001}, trainer_resources={"memory": 1e9})
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    plan = read_plan(tmp_path / "p.json")
    assert plan.spec.worker_resources == {"accelerator_type:A10G": 0.001}
    assert plan.spec.trainer_resources == {"memory": 1e9}
    assert plan.text() == (tmp_path / "p.json").read_text()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (".nan", "got a non-finite number (found: NaN)"),
        (".inf", "got a non-finite number"),
        ("-1", "must be >= 0 (found: -1)"),
        ('"a lot"', "expected number, got string"),
        ("true", "expected number, got boolean"),
    ],
)
def test_an_amount_that_is_not_a_finite_non_negative_number_is_refused_with_its_line(job, ftc, value, message):
    text = job().read_text() + f"worker_resources:\n  accelerator_type:A10G: 0.001\n  memory: {value}\n"
    line = text.splitlines().index(f"  memory: {value}") + 1
    r = ftc("compile", job(text))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert f"job.yaml:{line}: $.worker_resources.memory:" in r.err and message in r.err


def test_names_and_counts_are_bounded(job, ftc):
    many = {f"r{k}": 1 for k in range(33)}
    r = ftc("compile", job(worker_resources=many, trainer_resources={"x" * 201: 1}))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "$.worker_resources:" in r.err and "too many properties" in r.err
    assert "$.trainer_resources" in r.err and "is too long" in r.err


def test_plan_show_says_them_and_the_plan_file_holds_them_as_written(job, ftc, tmp_path):
    spec = job(worker_resources={"anyscale/accelerator_shape:4xA10G": 0.001}, trainer_resources={"memory": 1.5e11})
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    text = (tmp_path / "p.json").read_text()
    assert json.loads(text)["spec"]["worker_resources"] == yaml.safe_load(spec.read_text())["worker_resources"]
    r = ftc("plan", "show", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert (
        "ray       each worker anyscale/accelerator_shape:4xA10G 0.001; trainer memory 150000000000"
        " (asked of the cluster by --backend ray; recorded by the others)"
    ) in r.out
    assert ftc("compile", job(name="plain.yaml"), "-o", tmp_path / "plain.json").code == 0
    assert "ray " not in ftc("plan", "show", tmp_path / "plain.json").out


@pytest.mark.parametrize("name", ["a\x1b]0;title\x07b", "with space", "naïve"], ids=["escape", "space", "non-ascii"])
def test_a_name_is_printable_ascii_without_spaces(job, ftc, name):
    """Resource names reach logs, plan show and a manifest's annotation: Ray's are printable ASCII."""
    r = ftc("compile", job(worker_resources={name: 1}))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "$.worker_resources" in r.err and "\x1b" not in r.err and "\x07" not in r.err
