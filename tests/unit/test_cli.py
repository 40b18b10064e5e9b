"""The CLI stays import-light (each verb imported only when it runs), documents its exit codes, and prints the schema
and its reference page."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ftc.cli import COMMANDS, cli
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


def _loaded_verbs_after(args: list[str]) -> list[str]:
    """The verbs' modules loaded after ``ftc ARGS`` (not the helpers they share: ftc.commands._notes, ...)."""
    code = f"""
import contextlib, io, json, sys
from ftc.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main({args!r})
print(json.dumps([code, sorted(m for m in sys.modules if m.startswith("ftc.commands.") and "._" not in m)]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    code, loaded = json.loads(out.strip().splitlines()[-1])
    assert code == 0, args
    return loaded


def test_help_lists_every_verb_without_importing_any_verb_module():
    assert _loaded_verbs_after(["--help"]) == []


def test_a_verb_imports_its_own_module_and_no_other_verb():
    assert _loaded_verbs_after(["schema", "--plan"]) == ["ftc.commands.schema"]
    assert _loaded_verbs_after(["lineage", "--help"]) == ["ftc.commands.lineage"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_verb_of_the_table_resolves_and_its_summary_is_its_help(name):
    """The help lists the table's summaries without importing the verbs: each must read as the verb's own help."""
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command) and command.name == name
    stand_in = click.Command(name, help=COMMANDS[name].summary)
    for limit in (20, 45, 80, 10_000):
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), limit


def test_a_mistyped_verb_is_a_usage_error_that_names_the_closest_verb(ftc):
    r = ftc("comp")
    assert r.code == ExitCode.USAGE
    assert "No such command 'comp'." in r.err and "compile" in r.err.split("No such command")[1]
    r = ftc("nosuch")
    assert r.code == ExitCode.USAGE and "No such command 'nosuch'." in r.err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_import_a_verb_defers_to_when_it_runs_names_something_that_exists(name):
    """A verb imports its library function only when it runs: a name moved or renamed would show only then."""
    import ast
    import importlib
    import importlib.util

    module = importlib.import_module(COMMANDS[name].module)
    missing = []
    for node in ast.walk(ast.parse(Path(module.__file__).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ftc"):
            found = importlib.import_module(node.module)
            missing += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if not hasattr(found, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None
            ]
    assert missing == []
