"""A preference model's part of ``ftc report`` (DPO, IPO), from the evaluations its lineage record holds: the reward
accuracy, the rewards (the margin, the chosen and the rejected answers') and the answers' log-probabilities at each
evaluation as curves, and the last evaluation's values as a table. Values from the record are escaped for HTML."""

from __future__ import annotations

from typing import Any

from ftc.spec.text import for_html

from .report_charts import line_chart
from .report_stages import Stage, eval_curves, stage_bands

__all__ = ["preference_section"]

_CHOSEN, _REJECTED = "#1971c2", "#c92a2a"
#: (title, chart label, its curves: (record key, name, colour)); a chart is drawn when one of its curves has points
_CHARTS = (
    ("Reward accuracy", "reward accuracy", (("eval_reward_accuracy", "reward accuracy", "#2b8a3e"),)),
    ("Rewards", "rewards", (
        ("eval_reward_margin", "reward margin", "#5f3dc4"),
        ("eval_rewards_chosen", "chosen reward", _CHOSEN),
        ("eval_rewards_rejected", "rejected reward", _REJECTED),
    )),
    ("Log-probabilities", "answer log-probabilities", (
        ("eval_logps_chosen", "chosen log-probability", _CHOSEN),
        ("eval_logps_rejected", "rejected log-probability", _REJECTED),
    )),
)  # fmt: skip
_KEYS = [(key, name) for _, _, curves in _CHARTS for key, name, _ in curves]
_ABOUT = (
    "<p>An answer's reward is β × (its log-probability − the reference model's); the reward accuracy is the share "
    "of validation pairs whose chosen answer's reward is above the rejected one's, the margin their mean "
    "difference. Log-probabilities are summed over an answer's tokens, averaged over the pairs.</p>"
)


def preference_section(stages: list[Stage]) -> str:
    """The preference charts (every stage of a chain on one axis) and the checkpoint's last evaluation's table, or
    nothing for a run that is not a preference run."""
    charts = ""
    for title, label, curves in _CHARTS:
        series = [s for key, name, color in curves for s in eval_curves(stages, key, name, color)]
        series = [s for s in series if any(p is not None for p in s.points)]
        if series:
            charts += f"<h3>{title}</h3>" + line_chart(series, height=200, label=label, bands=stage_bands(stages))
    evals = stages[-1].evals
    last = next((e for e in reversed(evals) if any(e.get(key) is not None for key, _ in _KEYS)), None)
    if last is None:
        return ""
    rows = "".join(f"<tr><th>{name}</th><td>{_number(last.get(key))}</td></tr>" for key, name in _KEYS)
    table = f"<p>At step {for_html(str(last.get('step')))}, the last evaluation:</p><table>{rows}</table>"
    return "<h2>Preference</h2>" + _ABOUT + charts + table


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"
