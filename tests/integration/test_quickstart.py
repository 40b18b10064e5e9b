"""The README's quickstart: compile and run the shipped example end to end on CPU, as a user would."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO, metrics

pytestmark = pytest.mark.slow


def test_quickstart_compiles_and_trains_in_under_two_minutes(tmp_path):
    # a copy keeps the run's output (../../runs/quickstart from the spec) out of the checkout
    shutil.copytree(REPO / "examples" / "quickstart", tmp_path / "examples" / "quickstart")
    ftc = [sys.executable, "-m", "ftc.cli"]
    start = time.monotonic()
    subprocess.run(
        [*ftc, "compile", "examples/quickstart/job.yaml", "-o", "runs/quickstart/plan.json"], cwd=tmp_path, check=True
    )
    run = subprocess.run([*ftc, "run", "runs/quickstart/plan.json"], cwd=tmp_path, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    assert run.returncode == 0, run.stderr
    assert elapsed < 120
    out = tmp_path / "runs" / "quickstart"
    losses = [e["eval_loss"] for e in metrics(out, "eval")]
    assert len(losses) == 4 and losses[0] > losses[1] > losses[2] > losses[3], losses
    assert (out / "best" / "model.safetensors").exists()
    assert "checkpoint (best eval loss): " in run.stderr
    # the audit: the checkpoint alone reruns to the same bytes, in a new process, in a folder of its own
    audit = subprocess.run(
        [*ftc, "reproduce", "runs/quickstart", "-o", "runs/audit"], cwd=tmp_path, capture_output=True, text=True
    )
    assert audit.returncode == 0, audit.stderr[-3000:]
    assert "\nbitwise reproduced: " in "\n" + audit.stdout and "files: 10 of 10 identical" in audit.stdout
