"""The CLI stays import-light, documents its exit codes, and prints the schema and its reference page."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ftc.errors import ExitCode

from conftest import REPO

HEAVY = ("torch", "transformers", "peft", "deepspeed", "boto3", "botocore", "mlflow", "wandb", "tensorboard")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_training_stack():
    assert _loaded_after("import ftc.cli") == []


def test_help_compile_and_plan_show_load_no_training_stack(job, tmp_path):
    spec = job(logger={"provider": "mlflow", "provider_config": {"tracking_uri": "http://127.0.0.1:9"}})
    code = f"""
import contextlib, io
from ftc.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    assert main(["--help"]) == 0
    assert main(["compile", {str(spec)!r}, "-o", {str(tmp_path / "p.json")!r}]) == 0
    assert main(["plan", "show", {str(tmp_path / "p.json")!r}]) == 0
    assert main(["schema"]) == 0
"""
    assert _loaded_after(code) == []


def test_help_lists_the_verbs_and_exit_codes(ftc):
    r = ftc("--help")
    assert r.code == 0
    for verb in ("compile", "plan", "schema"):
        assert re.search(rf"^\s+{verb}\s", r.out, re.M)
    assert "3 spec invalid, 4 input unresolvable, 5 plan invalid" in r.out


def test_exit_codes_are_distinct_and_documented_in_the_cli_reference():
    codes = [c.value for c in ExitCode]
    assert len(codes) == len(set(codes))
    page = (REPO / "docs" / "cli.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\| {code.value} \| {code.name.lower().replace('_', ' ')} \|", page, re.M), code


def test_schema_prints_the_job_schema(ftc):
    schema = json.loads(ftc("schema").out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(ftc("schema", "--plan").out)["title"] == "ftc run plan"


def test_version(ftc):
    import ftc as package

    assert package.__version__ in ftc("--version").out


@pytest.mark.parametrize("args", [["schema"], ["schema", "--markdown"], ["--help"]])
def test_a_reader_that_closes_the_pipe_early_is_not_an_error(args):
    """`ftc schema | head -1`: the reader went away; exit 0 and nothing on stderr, as for any Unix filter."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before ftc writes a byte
    try:
        done = subprocess.run([sys.executable, "-m", "ftc.cli", *args], stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
