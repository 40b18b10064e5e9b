"""``ftc lineage show`` and ``diff`` carry the exact match of generated answers (``evaluation.generate``) that the
records hold: show beside each checkpoint's eval loss, diff as its change at the last evaluation."""

from __future__ import annotations

import json

from support.records import record_for, write_checkpoint


def _results(*evals: tuple[int, float, float | None]) -> dict:
    rows = [{"step": s, "eval_loss": loss, **({} if em is None else {"exact_match": em})} for s, loss, em in evals]
    step, loss, _ = evals[-1]
    return {"step": step, "total_steps": step, "eval_loss": loss, "evals": rows}


def test_lineage_show_gives_each_checkpoints_exact_match_beside_its_eval_loss(ftc, tmp_path):
    stage1 = record_for(tmp_path / "a", checkpoint={"name": "stage1"}, results=_results((0, 2.0, 0.0), (4, 0.325, 0.5)))
    (tmp_path / "b").mkdir()
    write_checkpoint(tmp_path / "b", parent=stage1, results=_results((0, 0.325, 0.5), (8, 0.23, 0.875)))
    r = ftc("lineage", "show", tmp_path / "b")
    assert r.code == 0, r.err
    first, second = r.out.splitlines()[:2]
    assert "  eval loss 0.2300  exact match 0.875" in first
    assert "  eval loss 0.3250  exact match 0.500" in second
    nodes = json.loads(ftc("lineage", "show", tmp_path / "b", "--format", "json").out)["chain"]
    assert [n["exact_match"] for n in nodes] == [0.875, 0.5]
    mermaid = ftc("lineage", "show", tmp_path / "b", "--format", "mermaid").out
    assert "eval loss 0.2300<br/>exact match 0.875" in mermaid


def test_lineage_show_of_a_run_without_generation_says_no_exact_match(ftc, tmp_path):
    write_checkpoint(tmp_path / "a", results=_results((0, 2.0, None), (4, 1.5, None)))
    r = ftc("lineage", "show", tmp_path / "a")
    assert r.code == 0 and "eval loss 1.5000" in r.out and "exact match" not in r.out
    # an exact match of an earlier evaluation is not the checkpoint's
    write_checkpoint(tmp_path / "b", results={**_results((0, 2.0, 0.25), (4, 1.5, None))})
    assert "exact match" not in ftc("lineage", "show", tmp_path / "b").out


def test_lineage_diff_names_the_exact_match_at_the_last_evaluation(ftc, tmp_path):
    write_checkpoint(tmp_path / "a", results=_results((0, 2.0, 0.0), (4, 0.325, 0.5)))
    write_checkpoint(tmp_path / "b", results=_results((0, 2.0, 0.0), (4, 0.23, 0.875)))
    r = ftc("lineage", "diff", tmp_path / "a", tmp_path / "b")
    assert r.code == 0, r.err
    assert "  exact_match (last evaluation): 0.5 -> 0.875\n" in r.out
    assert "  eval loss at step 4: 0.325 -> 0.23\n" in r.out
    found = json.loads(ftc("lineage", "diff", tmp_path / "a", tmp_path / "b", "--format", "json").out)
    assert "exact_match (last evaluation): 0.5 -> 0.875" in found["sections"]["results"]
    write_checkpoint(tmp_path / "c", results=_results((0, 2.0, 0.0), (4, 0.325, None)))
    assert (
        "  exact_match (last evaluation): 0.5 -> null\n" in ftc("lineage", "diff", tmp_path / "a", tmp_path / "c").out
    )
    same = ftc("lineage", "diff", tmp_path / "a", tmp_path / "a")
    assert "exact_match" not in same.out
