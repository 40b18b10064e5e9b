"""``ftc report`` of a chain (stage 2 continuing stage 1's adapter): every stage's curves on one step axis, stage 2's
steps continuing where stage 1's checkpoint ended, each stage labelled; a parent whose run's metrics are not on this
machine is said to be so, not left out. Records built directly (support.records), no training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ftc.lineage import report_charts, report_stages
from ftc.lineage.record import seal
from ftc.lineage.report_charts import Band, Series, line_chart

from support.records import DIGEST, record_for, write_checkpoint


def _parent_entry(parent: dict, location: str, lineage: bool = True) -> dict:
    entry = {"role": "adapter", "relation": "adapter-continued", "digest": DIGEST,
             "source": {"source": "local", "kind": "dir", "given": "stage1/latest", "location": location}}  # fmt: skip
    return {**entry, "record_id": parent["record_id"], "lineage": parent} if lineage else entry


def _chain(tmp_path: Path, stage1_evals: list[dict], stage2_evals: list[dict], metrics: bool = True) -> Path:
    """stage1/checkpoints/step-4 (2 epochs) and stage2/checkpoints/step-2 (1 epoch) continuing it."""
    first = tmp_path / "stage1" / "checkpoints" / "step-4"
    parent = write_checkpoint(first, results={"step": 4, "epoch": 2, "evals": stage1_evals})
    if metrics:
        lines = [{"type": "train", "step": i, "loss": 3.0 - i / 2} for i in range(1, 5)]
        (tmp_path / "stage1" / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    second = tmp_path / "stage2" / "checkpoints" / "step-2"
    entry = _parent_entry(parent, "../../../stage1/checkpoints/step-4")
    write_checkpoint(second, results={"step": 2, "epoch": 1, "evals": stage2_evals}, parents=[entry])
    return second


def _page(ftc, checkpoint: Path, tmp_path: Path) -> str:
    r = ftc("report", checkpoint, "-o", tmp_path / "page.html")
    assert r.code == 0, r.err
    return (tmp_path / "page.html").read_text()


def _chart(page: str, label: str) -> str:
    return re.search(rf'<svg[^>]*aria-label="{label}".*?</svg>', page, re.S).group(0)


def _xs(chart: str, name: str) -> list[float]:
    """The x coordinates of the curve titled ``name``."""
    d = re.search(rf'<path d="([^"]*)"[^>]*><title>{name}</title>', chart).group(1)
    return [float(x) for x in re.findall(r"[ML]([\d.]+),", d)]


def _ticks(chart: str) -> tuple[list[float], list[float]]:
    """(the x tick labels, the value tick labels) of a chart."""
    xs = re.findall(r'text-anchor="middle">([\d.]+)</text>', chart)
    ys = re.findall(r'text-anchor="end">(-?[\d.]+)</text>', chart)
    return [float(x) for x in xs], [float(y) for y in ys]


LOSSES_1 = [{"step": 0, "eval_loss": 6.0}, {"step": 2, "eval_loss": 2.0}, {"step": 4, "eval_loss": 1.0}]
LOSSES_2 = [{"step": 0, "eval_loss": 1.0}, {"step": 2, "eval_loss": 0.5}]


def test_a_chains_report_draws_both_stages_on_one_step_axis_stage_2_from_where_stage_1_ended(ftc, tmp_path):
    page = _page(ftc, _chain(tmp_path, LOSSES_1, LOSSES_2), tmp_path)
    chart = _chart(page, "train and eval loss")
    assert "stage 1 · epochs 1–2" in chart and "stage 2 · epoch 3" in chart  # each stage labelled, epochs continued
    assert ">step, continued across the chain's stages</text>" in chart
    legend = re.search(r'<div class="legend">(.*?)</div>', page).group(1)
    assert all(name in legend for name in ("stage 1 train loss", "stage 1 eval loss", "stage 2 eval loss"))
    assert "stage 2 train loss" not in legend  # stage 2's run has no metrics.jsonl and its record no train losses
    first, second = _xs(chart, "stage 1 eval loss"), _xs(chart, "stage 2 eval loss")
    assert len(first) == 3 and len(second) == 2
    assert second[0] == first[-1]  # stage 2's step 0 is stage 1's step 4
    assert second[1] - second[0] == pytest.approx((first[-1] - first[0]) / 2, abs=0.2)  # 2 steps there, 4 here
    xs, _ = _ticks(chart)
    assert xs == [0, 1, 2, 3, 4, 5, 6]  # one axis: 4 steps then 2
    assert _xs(chart, "stage 1 train loss")[-1] == first[-1]  # stage 1's train curve from its run's metrics
    assert 'stroke-dasharray="6 4"><title>stage 1 eval loss' in chart  # an earlier stage, dashed
    assert "stage 1</th><td><code>stage1/latest</code>: steps 0–4 here (its own 0–4)" in page
    assert "stage 2</th><td><code>this checkpoint</code>: steps 4–6 here (its own 0–2)" in page


def test_a_parent_whose_run_is_not_on_this_machine_is_drawn_from_its_record_and_the_page_says_so(ftc, tmp_path):
    evals = [{**e, "train_loss": 3.0} for e in LOSSES_1]
    page = _page(ftc, _chain(tmp_path, evals, LOSSES_2, metrics=False), tmp_path)
    assert "from its lineage record&#x27;s evaluations (its run&#x27;s metrics.jsonl is not on this machine" in page
    chart = _chart(page, "train and eval loss")
    assert len(_xs(chart, "stage 1 train loss")) == 3 and len(_xs(chart, "stage 1 eval loss")) == 3

    bare = _page(ftc, _chain(tmp_path / "bare", LOSSES_1, LOSSES_2, metrics=False), tmp_path)
    assert "Train loss: not available: its run&#x27;s metrics.jsonl is not on this machine" in bare
    assert len(_xs(_chart(bare, "train and eval loss"), "stage 1 eval loss")) == 3  # the stage is still drawn


def test_a_continued_adapter_without_a_lineage_record_is_named_not_silently_left_out(ftc, tmp_path):
    scratch = tmp_path / "foreign"
    scratch.mkdir()
    (scratch / "adapter_config.json").write_text("{}")
    entry = _parent_entry(record_for(scratch), "../foreign", lineage=False)
    checkpoint = tmp_path / "ckpt"
    write_checkpoint(checkpoint, results={"step": 2, "epoch": 1, "evals": LOSSES_2}, parents=[entry])
    page = _page(ftc, checkpoint, tmp_path)
    assert "continues stage1/latest, which carries no lineage record" in page
    assert "stage 1 eval loss" not in page and "eval loss" in _chart(page, "train and eval loss")


def test_a_chains_classifier_and_exact_match_curves_continue_too_on_axes_that_end_at_1(ftc, tmp_path):
    def scores(step: int, share: float) -> dict:
        return {"step": step, "eval_loss": 1.0, "eval_accuracy": share, "eval_f1_macro": share, "exact_match": share}

    first = [scores(0, 0.6), scores(2, 0.9), scores(4, 0.97)]
    page = _page(ftc, _chain(tmp_path, first, [scores(0, 0.97), scores(2, 1.0)]), tmp_path)
    for label in ("classifier metrics", "exact match"):
        chart = _chart(page, label)
        assert "stage 1 · epochs 1–2" in chart and "stage 2 · epoch 3" in chart
        name = "stage 2 accuracy" if label == "classifier metrics" else "stage 2 exact match"
        assert _xs(chart, name)[0] == _xs(chart, name.replace("2", "1"))[-1]
        xs, ys = _ticks(chart)
        assert max(ys) == 1.0 and xs == [0, 1, 2, 3, 4, 5, 6]
        assert all(round(y * 10) == y * 10 for y in ys)  # round ticks: 0.1 apart


def test_a_single_run_is_drawn_as_before_without_stages(ftc, tmp_path):
    write_checkpoint(tmp_path / "c", results={"evals": LOSSES_2})
    page = _page(ftc, tmp_path / "c", tmp_path)
    chart = _chart(page, "train and eval loss")
    assert "stage 1" not in page and ">step</text>" in chart and "One axis for the whole chain" not in page


def test_bands_widen_the_axis_to_every_stage_and_their_labels_are_escaped():
    chart = line_chart(
        [Series("s", "#123456", [(5.0, 1.0), (6.0, 0.5)])],
        label="x",
        bands=[Band(0, 4, "<b>stage 1</b>"), Band(4, 8, "stage 2")],
    )
    xs, _ = _ticks(chart)
    assert xs[0] == 0 and xs[-1] == 8
    assert "<b>stage" not in chart and "&lt;b&gt;stage 1&lt;/b&gt;" in chart
    assert chart.count('stroke-dasharray="4 3"') == 1  # the start of stage 2 marked


def test_the_lineage_graphs_boxes_hold_their_whole_names_wrapped_to_fit(ftc, tmp_path):
    checkpoint = tmp_path / "step-000048"
    write_checkpoint(checkpoint, model_id="ftc-examples/tiny-llama")
    graph = _chart(_page(ftc, checkpoint, tmp_path), "lineage graph")
    top = re.search(r"<g><title>(checkpoint [^<]*)</title>(.*?)</g>", graph, re.S)
    bold = re.findall(r'style="font-weight:600">([^<]*)</text>', top.group(2))
    assert bold == ["checkpoint step-000048 (adapter of", "ftc-examples/tiny-llama)"]  # it was cut at 44 characters
    assert top.group(1) == "checkpoint step-000048 (adapter of ftc-examples/tiny-llama)"
    assert all(len(line) <= report_charts._LINE_CHARS for line in bold)
    assert "eval loss 1.5000" in top.group(2)  # its scores under its digest

    long = "m" * 30 + "/" + "x" * 200
    write_checkpoint(tmp_path / "long", model_id=long)
    graph = _chart(_page(ftc, tmp_path / "long", tmp_path), "lineage graph")
    bold = re.findall(r'style="font-weight:600">([^<]*)</text>', graph)
    assert len(bold) == 3 and bold[-1].endswith("…") and f"({long})" not in "".join(bold)
    assert f"adapter of {long})</title>" in graph  # whole in the box's title


def test_a_stage_trained_on_an_export_of_an_earlier_stage_continues_it_through_the_export(ftc, tmp_path):
    for name in ("s1", "export"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
    stage1 = record_for(tmp_path / "s1", results={"step": 4, "epoch": 2, "evals": LOSSES_1})
    export = record_for(tmp_path / "export", parents=[{**_parent_entry(stage1, "../s1"), "relation": "merged"}])
    for section in ("datasets", "plan", "execution", "results"):  # an export trains nothing
        del export[section]
    export["export"] = {"merged": True, "dtype": "float32", "chat_template": "tokenizer", "stop_strings": [],
                        "eos_token_id": [2]}  # fmt: skip
    export = seal(export)
    base = {**_parent_entry(export, "../export"), "role": "base_model", "relation": "finetune"}
    write_checkpoint(tmp_path / "s2", results={"step": 2, "epoch": 1, "evals": LOSSES_2}, parents=[base])
    chart = _chart(_page(ftc, tmp_path / "s2", tmp_path), "train and eval loss")
    assert "stage 1 · epochs 1–2" in chart and "stage 2 · epoch 3" in chart and "stage 3" not in chart
    assert _xs(chart, "stage 2 eval loss")[0] == _xs(chart, "stage 1 eval loss")[-1]


def test_a_chain_of_more_stages_than_are_drawn_draws_the_latest_at_their_continued_steps(ftc, tmp_path):
    parent = None
    for i in range(report_stages.MAX_STAGES + 2):
        folder = tmp_path / f"s{i}"
        parent = write_checkpoint(
            folder,
            results={"step": 4, "epoch": 1, "evals": LOSSES_2},
            parents=[_parent_entry(parent, f"../s{i - 1}")] if parent else [],
        )
    page = _page(ftc, folder, tmp_path)
    chart = _chart(page, "train and eval loss")
    assert "2 earlier stage(s) not drawn (their steps are counted)" in page
    assert "stage 1 " not in chart and "stage 2 " not in chart and "stage 3 · epoch 3<" in chart
    assert "stage 14 · epoch 14<" in chart
    assert _xs(chart, "stage 3 eval loss")[0] == 56.0  # the frame's left: the axis starts at stage 3's step 8
    assert _ticks(chart)[0] == [10, 20, 30, 40, 50]  # steps 8 to 56
