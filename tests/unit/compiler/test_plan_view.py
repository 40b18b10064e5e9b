"""`ftc plan show` and `ftc plan diff` print values from plans, which may come from a checkpoint: outside text whose
control characters are shown, never obeyed by the terminal."""

from __future__ import annotations

import json

from ftc.compiler import describe_plan, diff_plans
from ftc.errors import ExitCode
from ftc.spec.plan import Plan
from ftc.spec.plan_format import seal_plan

from conftest import read_json

HOSTILE = "x\x1b[2J\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\\rverified\u202e"


def _raw_controls(text: str) -> list[str]:
    return sorted({c for c in text if c in "\x1b\r\u202e" or (ord(c) < 32 and c != "\n")})


def _plan(job, ftc, tmp_path, **spec) -> dict:
    assert ftc("compile", job(), "-o", tmp_path / "p.json").code == 0
    plan = read_json(tmp_path / "p.json")
    plan["spec"].update(spec)
    return plan


def test_plan_show_and_diff_print_outside_values_escaped(job, ftc, tmp_path):
    plan = _plan(job, ftc, tmp_path)
    hostile = {**plan["inputs"]["train"], "uri": f"data/{HOSTILE}.jsonl"}
    a = Plan.from_dict(seal_plan(plan))
    b = Plan.from_dict(seal_plan({**plan, "inputs": {**plan["inputs"], "train": hostile}}))
    shown = describe_plan(b)
    assert _raw_controls(shown) == [] and "data/x\\x1b[2J\\x1b]8;;http://evil.example\\x1b\\link" in shown
    assert "\\rverified\\u202e.jsonl" in shown
    lines = diff_plans(a, b)
    assert any(line.startswith("inputs.train.uri: ") for line in lines), lines
    assert _raw_controls("\n".join(lines)) == []


def test_plan_diff_of_stopping_sequences_shows_them_escaped(job, ftc, tmp_path):
    plan = _plan(job, ftc, tmp_path)
    generation = dict(plan["spec"].get("generation_config") or {})
    other = {**plan, "spec": {**plan["spec"], "generation_config": {**generation, "stopping_sequences": [HOSTILE]}}}
    lines = diff_plans(Plan.from_dict(seal_plan(plan)), Plan.from_dict(seal_plan(other)))
    assert any("stopping_sequences" in line and "\\u202e" in line for line in lines), lines
    assert _raw_controls("\n".join(lines)) == []


def test_ftc_plan_show_of_a_hostile_plan_prints_nothing_raw(job, ftc, tmp_path):
    plan = _plan(job, ftc, tmp_path)
    plan["inputs"]["train"] = {**plan["inputs"]["train"], "uri": f"data/{HOSTILE}.jsonl"}
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(seal_plan(plan)))
    r = ftc("plan", "show", path)
    assert _raw_controls(r.out + r.err) == [], (r.out, r.err)
    if r.code == 0:  # shown, escaped
        assert "data/x\\x1b[2J" in r.out
    else:  # refused as a plan: the message quotes it escaped
        assert r.code == ExitCode.PLAN_INVALID and "\\x1b[2J" in r.err, r.err


def test_ftc_plan_show_json_escapes_every_non_ascii_character_and_is_the_same_plan(job, ftc, tmp_path):
    plan = _plan(job, ftc, tmp_path)
    generation = dict(plan["spec"].get("generation_config") or {})
    spec = {**plan["spec"], "generation_config": {**generation, "stopping_sequences": ["</s>\u202e\x85"]}}
    path = tmp_path / "bidi.json"
    path.write_text(json.dumps(seal_plan({**plan, "spec": spec}), ensure_ascii=False), encoding="utf-8")
    r = ftc("plan", "show", path, "--json")
    assert r.code == 0, r.err
    assert r.out.isascii() and "\\u202e\\u0085" in r.out
    assert json.loads(r.out) == read_json(path)
