"""``torch_compile``: carried into the plan when true; absent from it when false or not given, so a spec without it
keeps the plan_id it had before the setting existed."""

from __future__ import annotations

from ftc.errors import ExitCode
from ftc.spec import JobSpec

from conftest import read_json


def test_false_or_absent_is_no_key_and_the_same_plan(job, ftc, tmp_path):
    assert ftc("compile", job(), "-o", tmp_path / "a.json").code == 0
    assert ftc("compile", job(torch_compile=False), "-o", tmp_path / "b.json").code == 0
    a, b = read_json(tmp_path / "a.json"), read_json(tmp_path / "b.json")
    assert "torch_compile" not in a["spec"] and a["plan_id"] == b["plan_id"]
    assert JobSpec.from_dict(a["spec"]).torch_compile is False


def test_true_is_carried_into_the_plan(job, ftc, tmp_path):
    r = ftc("compile", job(torch_compile=True), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    plan = read_json(tmp_path / "p.json")
    assert plan["spec"]["torch_compile"] is True
    assert JobSpec.from_dict(plan["spec"]).torch_compile is True
    shown = ftc("plan", "show", tmp_path / "p.json")
    assert shown.code == 0 and "decoder layers compiled (torch_compile)" in shown.out, shown.out


def test_a_value_that_is_not_a_boolean_is_refused(job, ftc):
    r = ftc("compile", job(torch_compile="yes"))
    assert r.code == ExitCode.SPEC_INVALID
    assert "$.torch_compile: expected boolean, got string" in r.err and "fix: give a boolean" in r.err


def test_liger_kernels_with_compiled_layers_are_refused_with_what_to_do(job, ftc):
    r = ftc("compile", job(torch_compile=True, kernels="liger"))
    assert r.code == ExitCode.SPEC_INVALID
    assert "$.kernels: Liger's kernels are opaque to torch_compile" in r.err
    assert "fix: set kernels: auto (PyTorch's, compiled) or torch_compile: false" in r.err
