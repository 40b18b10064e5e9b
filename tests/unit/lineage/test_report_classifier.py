"""``ftc report`` of a classifier's checkpoint: its metric curves per evaluation, the last evaluation's per-class
table and its confusion matrix drawn; nothing of it for a run that is not a classifier's."""

from __future__ import annotations

import re

import numpy as np

from ftc.runtime.training.classification import Classified, classification_metrics

from support.records import write_checkpoint

HOSTILE = "<script>alert(1)</script>"


def _eval(step: int, probs, truth, names) -> dict:
    probs, truth = np.asarray(probs), np.asarray(truth)
    metrics = classification_metrics(probs, truth, names, ["accuracy", "f1", "prauc"])
    return {"step": step, "eval_loss": 0.5, **Classified(probs, truth, 0.5, metrics).record_fields()}


def _page(ftc, tmp_path, evals) -> str:
    write_checkpoint(tmp_path / "ckpt", results={"evals": evals})
    r = ftc("report", tmp_path / "ckpt", "-o", tmp_path / "page.html")
    assert r.code == 0, r.err
    return (tmp_path / "page.html").read_text()


def test_a_classifiers_report_draws_its_metric_curves_and_the_last_confusion_matrix(ftc, tmp_path):
    names = ["safe", "unsafe"]
    evals = [
        _eval(2, [[0.6, 0.4], [0.7, 0.3], [0.8, 0.2]], [0, 1, 1], names),  # says safe to everything
        _eval(4, [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1], names),
    ]
    page = _page(ftc, tmp_path, evals)
    assert "<h2>Classifier</h2>" in page and 'aria-label="classifier metrics"' in page
    assert all(name in page for name in ("accuracy", "macro F1", "macro PR-AUC"))
    matrix = re.search(r'<svg[^>]*aria-label="confusion matrix".*?</svg>', page, re.S).group(0)
    counts = re.findall(r'text-anchor="middle" fill="#[0-9a-f]+">(\d+)</text>', matrix)
    assert counts == ["1", "0", "1", "1"]  # step 4's: [[1, 0], [1, 1]]
    assert (
        "<tr><td class='mono'>unsafe</td><td>2</td><td>1.000</td><td>0.500</td><td>0.667</td><td>1.000</td></tr>"
        in page
    )


def test_labels_from_the_record_are_escaped_and_a_run_without_a_classifier_has_no_such_section(ftc, tmp_path):
    page = _page(ftc, tmp_path, [_eval(4, [[0.9, 0.1], [0.2, 0.8]], [0, 1], ["safe", HOSTILE])])
    assert HOSTILE not in page and "&lt;script&gt;" in page
    plain = _page(ftc, tmp_path / "sft", [{"step": 4, "eval_loss": 1.5}])
    assert "Classifier" not in plain and "confusion matrix" not in plain


def test_a_confusion_matrix_of_too_many_classes_is_not_drawn(ftc, tmp_path):
    names = [f"c{i}" for i in range(41)]
    truth = np.arange(41)
    page = _page(ftc, tmp_path, [_eval(4, np.eye(41)[truth], truth, names)])
    assert "41 classes: the confusion matrix is drawn for at most 40." in page
    assert 'aria-label="confusion matrix"' not in page and page.count("<td class='mono'>c") == 41
