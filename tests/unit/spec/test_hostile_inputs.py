"""Hostile input ends in a clear error, quickly: never a hang, a traceback, unbounded memory or a wrong acceptance.

Each case is what someone could hand `ftc compile` or `ftc run`: files that are not files, documents that explode
or nest without end, numbers that are not numbers, data lines that are not text.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml

from ftc.errors import ExitCode

GOOD_LINE = '{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}\n'


def _spec(job, **changes) -> str:
    """The text of the fixture's job spec with ``changes`` applied."""
    spec = yaml.safe_load(job().read_text())
    spec.update(changes)
    return yaml.safe_dump(spec, sort_keys=False)


def _compile(ftc, spec, tmp_path, seconds: float = 10):
    started = time.monotonic()
    r = ftc("compile", spec, "-o", tmp_path / "p.json")
    assert time.monotonic() - started < seconds, f"took {time.monotonic() - started:.1f} s"
    assert "Traceback" not in r.err, r.err
    return r


# ---- the spec file itself --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a regular file; give the spec file"),
        (lambda p: p.symlink_to(p), "a symlink loop (the link points back at itself)"),
        (lambda p: p.symlink_to("/dev/zero"), "is a character device, not a regular file"),
        (lambda p: p.write_text("# padding\n" * 120_000), "larger than 1 MiB, more than a spec file holds"),
    ],
    ids=["fifo", "symlink loop", "device", "too large"],
)
def test_a_spec_that_is_not_a_readable_text_file_is_a_usage_error(make, message, ftc, tmp_path):
    spec = tmp_path / "job.yaml"
    make(spec)
    r = _compile(ftc, spec, tmp_path)
    assert r.code == ExitCode.USAGE
    assert message in r.err


def test_a_billion_laughs_spec_is_refused_before_it_expands(ftc, tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ", ".join(["*" + ("a" if i == 1 else f"l{i - 1}")] * 9) + "]")
    (tmp_path / "job.yaml").write_text("\n".join(lines) + "\n")
    r = _compile(ftc, tmp_path / "job.yaml", tmp_path)
    assert r.code == ExitCode.SPEC_INVALID
    assert "the document holds more than 20000 values (each use of a YAML alias counted)" in r.err


@pytest.mark.parametrize(
    "text, message",
    [
        ("model_id: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested too deeply (more than 32 levels are allowed)"),
        ("model_id: " + "[" * 40 + "]" * 40 + "\n", "the document is nested more than 32 deep"),
        ("model_id: x\x00\n", "not valid YAML/JSON: unacceptable character #x0000"),
        ("?\n", "a key must be text; 'an empty key' reads as null"),
        ("1: x\n", "a key must be text; '1' reads as int"),
        ('model_id: x\ntrain_path: "data/a\\0b.jsonl"\n', "$.train_path: holds a NUL character"),
        ("a: 1\na: 2\n", "$.a: duplicate key (first given on line 1); the later value would silently win"),
        ("model_id: !!python/object/apply:os.system [echo]\n", "could not determine a constructor for the tag"),
        ("- model_id\n", "$: expected object, got array"),
    ],
    ids=[
        "20000 deep",
        "40 deep",
        "NUL byte",
        "empty key",
        "integer key",
        "escaped NUL",
        "duplicate key",
        "python tag",
        "a list",
    ],
)
def test_a_spec_too_deep_or_with_forbidden_characters_is_invalid(text, message, ftc, tmp_path):
    (tmp_path / "job.yaml").write_text(text)
    r = _compile(ftc, tmp_path / "job.yaml", tmp_path)
    assert r.code == ExitCode.SPEC_INVALID
    assert message in r.err


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"learning_rate": float("nan")}, "$.learning_rate: expected number, got a non-finite number (found: NaN)"),
        (
            {"learning_rate": float("inf")},
            "$.learning_rate: expected number, got a non-finite number (found: Infinity)",
        ),
        ({"num_epochs": 10.0}, "$.num_epochs: expected integer, got number (found: 10.0)"),
        ({"seed": 2**70}, "$.seed: must be <= 4294967295"),
        ({"image": "Bad Image!!"}, "$.image: not an image reference"),
    ],
    ids=["nan", "inf", "float for an integer", "seed out of range", "image reference"],
)
def test_values_no_run_could_use_are_refused_at_compile(changes, message, job, ftc, tmp_path):
    (tmp_path / "hostile.yaml").write_text(_spec(job, **changes))
    r = _compile(ftc, tmp_path / "hostile.yaml", tmp_path)
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert message in r.err
    assert not (tmp_path / "p.json").exists()


def test_thousands_of_unknown_keys_are_counted_not_each_described(job, ftc, tmp_path):
    spec = yaml.safe_load(job().read_text())
    spec.update({f"stray_{i}": i for i in range(5000)})
    (tmp_path / "hostile.yaml").write_text(yaml.safe_dump(spec))
    r = _compile(ftc, tmp_path / "hostile.yaml", tmp_path)
    assert r.code == ExitCode.SPEC_INVALID
    assert "4980 more unknown keys" in r.err
    assert r.err.count("unknown key") <= 22


@pytest.mark.parametrize("target", ["file", "/dev/null"])
def test_an_output_dir_that_is_not_a_folder_is_refused(target, job, ftc, tmp_path):
    output = tmp_path / "taken"
    output.write_text("not a folder")
    (tmp_path / "hostile.yaml").write_text(_spec(job, output_dir=str(output) if target == "file" else target))
    r = _compile(ftc, tmp_path / "hostile.yaml", tmp_path)
    assert r.code == ExitCode.SPEC_INVALID
    assert "exists and is not a folder" in r.err and "$.output_dir" in r.err


def test_a_credential_in_a_bucket_uri_is_refused_and_never_echoed(job, ftc, tmp_path):
    (tmp_path / "hostile.yaml").write_text(_spec(job, train_path="s3://AKIAEXAMPLE:s3cr3t@bucket/train.jsonl"))
    r = _compile(ftc, tmp_path / "hostile.yaml", tmp_path)
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "s3://***@bucket/train.jsonl: the URI holds a credential (user:secret@" in r.err
    assert "s3cr3t" not in r.err + r.out and "AKIAEXAMPLE" not in r.err + r.out


# ---- inputs that are not regular files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a regular file"),
        (lambda p: p.symlink_to("/dev/zero"), "is a character device, not a regular file"),
        (lambda p: p.symlink_to(p), "Too many levels of symbolic links"),
    ],
    ids=["fifo", "device", "symlink loop"],
)
def test_a_data_input_that_is_not_a_regular_file_is_refused_at_once(make, message, job, ftc, tmp_path):
    make(tmp_path / "data" / "hostile.jsonl")
    (tmp_path / "hostile.yaml").write_text(_spec(job, train_path="data/hostile.jsonl"))
    r = _compile(ftc, tmp_path / "hostile.yaml", tmp_path)
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert message in r.err


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: os.mkfifo(d / "extra.bin"), "extra.bin is a FIFO (named pipe), not a regular file"),
        (lambda d: (d / "sub").symlink_to(d), "links to a folder that holds it (a symlink loop)"),
    ],
    ids=["fifo inside", "loop inside"],
)
def test_a_weights_folder_holding_what_is_not_a_file_is_refused(make, message, job, ftc, tmp_path, tiny_model):
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(tiny_model, weights)
    make(weights)
    (tmp_path / "hostile.yaml").write_text(_spec(job, initial_base_model_ckpt_path="weights"))
    r = _compile(ftc, tmp_path / "hostile.yaml", tmp_path)
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert message in r.err


# ---- data lines -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, message",
    [
        (
            '{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "2"}]}\n',
            "messages[0] (user) holds a lone surrogate",
        ),
        ("[" * 20_000 + "]" * 20_000 + "\n", "nested too deeply to be a chat example"),
        ('{"messages": "' + "x" * (17 << 20) + '"}\n', "longer than 16 MiB (one chat example per line)"),
        (GOOD_LINE.replace('"2"}', '"2", "weight": NaN}'), "NaN is not JSON (numbers must be finite)"),
        (GOOD_LINE.replace('"2"}', '"2", "content": "4"}'), 'duplicate key "content" in one object'),
        (b'{"messages": "\xff"}\n', "not UTF-8 text"),
        ('{"messages": [{"role": "user", "content": "x"}]\n', "not valid JSON (Expecting ',' delimiter at column 48)"),
    ],
    ids=["lone surrogate", "20000 deep", "17 MiB line", "NaN", "duplicate key", "not UTF-8", "JSON error at the end"],
)
def test_a_data_line_that_is_not_a_chat_example_is_named(line, message, job, ftc, tmp_path):
    line = line if isinstance(line, bytes) else line.encode()
    (tmp_path / "data" / "hostile.jsonl").write_bytes(GOOD_LINE.encode() + line + GOOD_LINE.encode())
    (tmp_path / "hostile.yaml").write_text(_spec(job, train_path="data/hostile.jsonl"))
    r = _compile(ftc, tmp_path / "hostile.yaml", tmp_path)
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert f"hostile.jsonl:2: $.train_path (spec line 3): {message}" in r.err


def test_a_plan_that_is_not_a_regular_file_is_a_usage_error(ftc, tmp_path):
    os.mkfifo(tmp_path / "plan.json")
    started = time.monotonic()
    r = ftc("run", tmp_path / "plan.json")
    assert time.monotonic() - started < 10
    assert r.code == ExitCode.USAGE
    assert "is a FIFO (named pipe), not a regular file; give the plan file (plan.json)" in r.err


def _sealed(plan: dict, change) -> dict:
    """``plan`` changed by ``change`` and sealed again: a plan_id that matches, as a forger would make it."""
    from ftc.spec.plan_format import seal_plan

    change(plan)
    return seal_plan(plan)


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda good: json.dumps(good).replace('"seed": 42', '"seed": NaN'), "NaN is not JSON"),
        (lambda good: "[" * 100_000 + "]" * 100_000, "not a plan: nested too deeply"),
        (
            lambda good: json.dumps(_sealed(good, lambda p: p["output"].update(dir="out\x00put"))),
            "$.output.dir: holds a NUL character",
        ),
        (
            lambda good: json.dumps(_sealed(good, lambda p: p["launch"].update(command=["sh", "-c", "touch pwned"]))),
            '$.launch.command: ["sh", "-c", "touch pwned"] is not the command ftc runs for 1 node(s) x 1 process(es)',
        ),
        (lambda good: json.dumps({**good, "seed": 7}), "Additional properties are not allowed ('seed' was unexpected)"),
    ],
    ids=["NaN", "100000 deep", "NUL in a path", "a foreign launch command", "edited"],
)
def test_a_forged_or_broken_plan_is_refused_before_anything_runs(write, message, job, ftc, tmp_path, monkeypatch):
    assert ftc("compile", job(), "-o", tmp_path / "good.json").code == 0
    good = json.loads((tmp_path / "good.json").read_text())
    (tmp_path / "plan.json").write_text(write(good))
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    r = ftc("run", tmp_path / "plan.json", "--backend", "local")
    assert time.monotonic() - started < 10
    assert r.code == ExitCode.PLAN_INVALID, r.err
    assert message in r.err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "output").exists()


# ---- weights whose files or config.json do not hold what they claim ----------------------------------------------


def test_a_malformed_safetensors_file_is_refused_at_compile(job, ftc, tmp_path, tiny_model):
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(tiny_model, weights)
    data = (weights / "model.safetensors").read_bytes()
    (weights / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    (tmp_path / "hostile.yaml").write_text(_spec(job, initial_base_model_ckpt_path="weights"))
    r = _compile(ftc, tmp_path / "hostile.yaml", tmp_path)
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "not a valid safetensors file: model.safetensors: " in r.err


def test_a_config_that_lies_about_the_tensors_is_refused_at_compile(job, ftc, tmp_path, tiny_model):
    import json
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(tiny_model, weights)
    config = json.loads((weights / "config.json").read_text())
    config["intermediate_size"] *= 2  # the tensors stay as they are
    (weights / "config.json").write_text(json.dumps(config))
    (tmp_path / "hostile.yaml").write_text(_spec(job, initial_base_model_ckpt_path="weights"))
    r = _compile(ftc, tmp_path / "hostile.yaml", tmp_path)
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert (
        "the weights do not match the architecture of ftc-tests/tiny-llama (checkpoint): 6 tensor(s) of another shape"
        in r.err
    )
    assert "model.layers.0.mlp.gate_proj.weight [128, 64] (expected [256, 64])" in r.err
