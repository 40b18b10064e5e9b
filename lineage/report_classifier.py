"""A classifier's part of ``ftc report``, from the evaluations its lineage record holds: accuracy, macro F1 and macro
PR-AUC at each evaluation as curves, the last evaluation's per-class values as a table and its confusion matrix as a
picture (each cell shaded by its share of the true class's examples). Outside text (the labels) is escaped for HTML.
"""

from __future__ import annotations

from typing import Any

from ftc.spec.text import for_html

from .report_charts import line_chart
from .report_stages import Stage, eval_curves, stage_bands

__all__ = ["MAX_CLASSES", "classifier_section"]

#: the most classes a confusion matrix is drawn for (a record may name any number; the table still lists them)
MAX_CLASSES = 40
_CURVES = (
    ("eval_accuracy", "accuracy", "#2b8a3e"),
    ("eval_f1_macro", "macro F1", "#d9480f"),
    ("eval_prauc_macro", "macro PR-AUC", "#5f3dc4"),
)
_CELL, _MARGIN = 44, 140


def classifier_section(stages: list[Stage]) -> str:
    """The classifier's charts (every stage of a chain on one axis) and the checkpoint's last evaluation's tables, or
    nothing for a run that is not a classifier's."""
    series = [s for key, name, color in _CURVES for s in eval_curves(stages, key, name, color) if s.points]
    evals = stages[-1].evals
    last = next((e for e in reversed(evals) if isinstance(e.get("eval_classes"), dict)), None)
    if not series and last is None:
        return ""
    out = "<h2>Classifier</h2>"
    if series:
        out += line_chart(series, height=200, label="classifier metrics", bands=stage_bands(stages))
    if last is not None:
        labels = list(last["eval_classes"])
        out += f"<p>At step {for_html(str(last.get('step')))}, the last evaluation:</p>" + _table(last["eval_classes"])
        out += _confusion(labels, last.get("eval_confusion_matrix"))
    return out


def _share(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _table(classes: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class='mono'>{for_html(label)}</td><td>{for_html(str(values.get('support', '—')))}</td>"
        + "".join(f"<td>{_share(values.get(k))}</td>" for k in ("precision", "recall", "f1", "prauc"))
        + "</tr>"
        for label, values in classes.items()
        if isinstance(values, dict)
    )
    head = "<tr><th>class</th><th>support</th><th>precision</th><th>recall</th><th>F1</th><th>PR-AUC</th></tr>"
    return f"<table>{head}{rows}</table>"


def _confusion(labels: list[str], matrix: Any) -> str:
    """The confusion matrix as an SVG grid: rows the true class, columns the predicted one."""
    k = len(labels)
    shaped = isinstance(matrix, list) and len(matrix) == k and all(isinstance(r, list) and len(r) == k for r in matrix)
    if not shaped or not k:
        return "<p class='warn'>No confusion matrix in the record for these classes.</p>"
    if k > MAX_CLASSES:
        return f"<p class='warn'>{k} classes: the confusion matrix is drawn for at most {MAX_CLASSES}.</p>"
    size = _MARGIN + k * _CELL
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size + 20}" role="img" '
        f'aria-label="confusion matrix"><text x="{_MARGIN}" y="14" font-size="12">predicted →</text>'
    ]
    for i, label in enumerate(labels):
        name = for_html(label[:18])
        y = _MARGIN + i * _CELL
        parts.append(f'<text x="{_MARGIN - 6}" y="{y + _CELL / 2 + 4}" font-size="12" text-anchor="end">{name}</text>')
        x = _MARGIN + i * _CELL + _CELL / 2
        parts.append(
            f'<text x="{x}" y="{_MARGIN - 8}" font-size="12" transform="rotate(-45 {x} {_MARGIN - 8})">{name}</text>'
        )
        counts = [c if isinstance(c, int) and not isinstance(c, bool) and c >= 0 else 0 for c in matrix[i]]
        total = sum(counts)
        for j, count in enumerate(counts):
            share = count / total if total else 0.0
            cx = _MARGIN + j * _CELL
            parts.append(
                f'<rect x="{cx}" y="{y}" width="{_CELL}" height="{_CELL}" fill="#3867d6" fill-opacity="{share:.3f}" '
                f'stroke="#ccc"><title>true {name}, predicted {for_html(labels[j][:18])}: {count}</title></rect>'
                f'<text x="{cx + _CELL / 2}" y="{y + _CELL / 2 + 4}" font-size="12" text-anchor="middle" '
                f'fill="{"#fff" if share > 0.5 else "#222"}">{count}</text>'
            )
    parts.append("</svg>")
    return "<p>Confusion matrix (rows: the true class; columns: the predicted one):</p>" + "".join(parts)
