"""``ftc report`` of a preference run's checkpoint: its reward accuracy, rewards and answer log-probabilities per
evaluation as curves (a reward below zero drawn inside its chart), the last evaluation's values, and the reference
log-probabilities each dataset pins; nothing of it for a run that is not a preference run."""

from __future__ import annotations

import json
import re

from support.records import DIGEST, write_checkpoint

HOSTILE = "<script>alert(1)</script>"
REFERENCE = "sha256:" + "ab" * 32


def _eval(step, accuracy, chosen, rejected, logps) -> dict:
    return {"step": step, "epoch": 0, "eval_loss": 0.69 - step / 10, "eval_reward_accuracy": accuracy,
            "eval_reward_margin": chosen - rejected, "eval_rewards_chosen": chosen, "eval_rewards_rejected": rejected,
            "eval_logps_chosen": logps[0], "eval_logps_rejected": logps[1]}  # fmt: skip


EVALS = [_eval(2, 0.5, 0.01, -0.01, (-12.5, -13.0)), _eval(4, 1.0, 0.25, -0.5, (-10.0, -21.0))]


def _dataset(role: str, location: str, reference: dict | None) -> dict:
    entry = {"role": role, "source": {"source": "local", "kind": "file", "location": location}, "sha256": DIGEST,
             "examples": 8, "examples_used": 8, "examples_skipped": 0}  # fmt: skip
    return {**entry, "reference_logprobs": reference} if reference else entry


def _page(ftc, tmp_path, evals, datasets=None) -> str:
    """The report of checkpoints/step-4 in a run folder whose metrics.jsonl holds the DPO train losses."""
    run = tmp_path / "run"
    folder = run / "checkpoints" / "step-4"
    record = {"results": {"evals": evals}} | ({"datasets": datasets} if datasets else {})
    write_checkpoint(folder, **record)
    lines = [{"type": "train", "step": s, "loss": 0.7 - s / 20} for s in range(1, 5)] + [
        {"type": "eval", **e} for e in evals
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    r = ftc("report", folder, "-o", tmp_path / "page.html")
    assert r.code == 0, r.err
    return (tmp_path / "page.html").read_text()


def _chart(page: str, label: str) -> str:
    return re.search(rf'<svg[^>]*aria-label="{label}".*?</svg>', page, re.S).group(0)


def test_a_preference_runs_report_draws_its_rewards_per_evaluation_and_the_last_values(ftc, tmp_path):
    datasets = [_dataset("train", "../data/pairs.jsonl", {"digest": REFERENCE, "pairs": 8})]
    page = _page(ftc, tmp_path, EVALS, datasets)
    assert "<h2>Preference</h2>" in page
    for label, names in (
        ("reward accuracy", ["reward accuracy"]),
        ("rewards", ["reward margin", "chosen reward", "rejected reward"]),
        ("answer log-probabilities", ["chosen log-probability", "rejected log-probability"]),
    ):
        chart = _chart(page, label)
        assert [
            re.search(r"<title>([^<]*)</title>", p).group(1) for p in re.findall(r"<path.*?</path>", chart)
        ] == names
        assert chart.count("<circle") == 2 * len(names)  # one point per evaluation, each curve
    # a reward and a log-probability below zero are drawn inside the chart, not below its frame
    for label in ("rewards", "answer log-probabilities"):
        chart = _chart(page, label)
        top, height = (
            float(v) for v in re.search(r'<rect x="\d+" y="(\d+)" width="\d+" height="(\d+)"', chart).groups()
        )
        ys = [float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.-]+)"', chart)]
        assert ys and all(top <= y <= top + height for y in ys), (label, top, height, ys)
    assert "At step 4, the last evaluation:" in page
    assert "<tr><th>reward margin</th><td>0.7500</td></tr>" in page
    assert "<tr><th>rejected reward</th><td>-0.5000</td></tr>" in page
    assert "<tr><th>rejected log-probability</th><td>-21.0000</td></tr>" in page
    # the pin of the reference numbers: in full among the pinned inputs, short in the lineage table
    assert f"the reference model's log-probabilities of its 8 pairs pinned <code>{REFERENCE}</code>" in page
    assert f"reference log-probs {REFERENCE[:19]}… of 8 pairs" in page
    assert "from the run&#x27;s metrics.jsonl" in page  # the DPO train losses drawn as a run's are


def test_a_run_without_preference_metrics_has_no_such_section_and_outside_text_is_escaped(ftc, tmp_path):
    plain = _page(ftc, tmp_path / "sft", [{"step": 4, "eval_loss": 1.5}])
    for absent in ("<h2>Preference</h2>", "reward", "reference log-probs", "reference model"):
        assert absent not in plain
    datasets = [_dataset("train", HOSTILE, {"digest": REFERENCE, "pairs": 8})]
    page = _page(ftc, tmp_path / "dpo", EVALS, datasets)
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_preference_run_evaluated_once_shows_its_one_evaluation(ftc, tmp_path):
    page = _page(ftc, tmp_path, EVALS[1:])
    assert "<h2>Preference</h2>" in page and "At step 4, the last evaluation:" in page
    assert _chart(page, "reward accuracy").count("<circle") == 1
