"""`ftc compile --emit dvc`: what is written into dvc.yaml is read back by DVC as written (a ${ is no variable), a
stage's command is one line, stage names are ones DVC can address, and an odd existing dvc.yaml is named, not a
traceback."""

from __future__ import annotations

import pytest
import yaml

from ftc.errors import ExitCode


def _emit(ftc, spec, tmp_path, *more):
    return ftc("compile", spec, "-o", tmp_path / "p.json", "--emit", "dvc", "--dvc-file", tmp_path / "dvc.yaml", *more)


def test_a_dollar_brace_in_output_dir_is_written_as_a_dvc_literal(ftc, job, tmp_path):
    r = _emit(ftc, job(output_dir="runs/${x}"), tmp_path)
    assert r.code == 0, r.err
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    (stage,) = stages.values()
    assert stage["cmd"].endswith("ftc lineage verify 'runs/\\${x}'")
    assert [next(iter(o)) for o in stage["outs"]][1] == "runs/\\${x}/checkpoints"
    assert next(iter(stage["metrics"][0])) == "runs/\\${x}/summary.json"
    text = (tmp_path / "dvc.yaml").read_text()
    assert "${x}" not in text.replace("\\${x}", "")  # every ${ escaped


def test_a_dollar_brace_already_escaped_in_a_path_stays_what_it_was(ftc, job, tmp_path):
    r = _emit(ftc, job(output_dir="runs/a\\${x}"), tmp_path)
    assert r.code == 0, r.err
    (stage,) = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"].values()
    # DVC turns \${ into ${: \\${ reads back as \${, the path as written
    assert next(iter(stage["metrics"][0])) == "runs/a\\\\${x}/summary.json"


@pytest.mark.parametrize("output_dir", ["runs/a\nb", "runs/a\rb", "runs/\x1b[2Jx", "runs/a\u202eb"])
def test_a_control_character_in_output_dir_is_refused(ftc, job, tmp_path, output_dir):
    r = _emit(ftc, job(output_dir=output_dir), tmp_path)
    assert r.code == ExitCode.USAGE, r.err
    assert "output_dir 'runs/a" in r.err or "output_dir 'runs/\\x1b" in r.err
    assert "holds a control character" in r.err and "cannot be written into a DVC stage's command" in r.err
    assert "\x1b" not in r.err and "\r" not in r.err
    assert not (tmp_path / "dvc.yaml").exists()


@pytest.mark.parametrize("name", ["a:b", "a@b", "a/b", "a.b", "a b", "-x", "a${x}", "a\nb", "é" * 129, "x;y"])
def test_a_stage_name_dvc_cannot_address_is_refused(ftc, job, tmp_path, name):
    r = _emit(ftc, job(), tmp_path, "--dvc-stage", name)
    assert r.code == ExitCode.USAGE, r.err
    assert "cannot name a DVC stage" in r.err and "give another name with --dvc-stage NAME" in r.err
    assert "\n" not in r.err.split("cannot name")[0].split("error: ")[-1]  # the name is shown on one line
    assert not (tmp_path / "dvc.yaml").exists()


def test_a_default_stage_name_from_a_dotted_spec_name_asks_for_one(ftc, job, tmp_path):
    r = _emit(ftc, job(name="my.job.yaml"), tmp_path)
    assert r.code == ExitCode.USAGE, r.err
    assert "'my.job' cannot name a DVC stage" in r.err and "name the stage with --dvc-stage NAME" in r.err
    r = _emit(ftc, job(name="my.job.yaml"), tmp_path, "--dvc-stage", "my_job-2")
    assert r.code == 0, r.err
    assert "my_job-2" in yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize(
    "existing, found",
    [
        ({"stages": {"other": {"cmd": "x", "outs": [[1, 2]]}}}, "stage 'other': outs is not a list of paths"),
        ({"stages": {"other": {"cmd": "x", "outs": [{"a": {}, "b": {}}]}}}, "stage 'other': outs is not a list"),
        ({"stages": {"other": {"cmd": "x", "outs": [None]}}}, "found None"),
        ({"stages": {"other": {"cmd": "x", "outs": 7}}}, "found 7"),
        ({"stages": {"other": 5}}, "stage 'other' is not a mapping"),
        ({"stages": {"other": {"cmd": "x"}}, "plots": {"a": 1}}, "plots is not a list"),
        ({"stages": {}, "plots": [{"eval loss": 3}]}, "the plot 'eval loss' is not one ftc wrote"),
        ({"stages": {}, "plots": [{"eval loss": {"y": "eval_loss"}}]}, "the plot 'eval loss' is not one ftc wrote"),
    ],
)
def test_an_existing_dvc_yaml_of_odd_shape_is_a_clear_error(ftc, job, tmp_path, existing, found):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(existing))
    before = (tmp_path / "dvc.yaml").read_text()
    r = _emit(ftc, job(), tmp_path)
    assert r.code == ExitCode.USAGE, r.err
    assert found in r.err and "give another --dvc-file" in r.err and "Traceback" not in r.err
    assert (tmp_path / "dvc.yaml").read_text() == before


def test_an_existing_dvc_yaml_with_empty_outs_and_plots_is_extended(ftc, job, tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages:\n  other:\n    cmd: x\n    outs:\nplots:\n")
    r = _emit(ftc, job(), tmp_path)
    assert r.code == 0, r.err
    document = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    assert len(document["stages"]) == 2 and document["stages"]["other"] == {"cmd": "x", "outs": None}
    assert document["plots"][0]["eval loss"]["x"] == "step"
