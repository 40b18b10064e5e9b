"""docs/trackers.md (and the README, where it names them) names the per-checkpoint tracker tags as the trackers
write them: a real MLflow tracker (a local SQLite store) tags a run's checkpoint step-000016 and the tags are read
back."""

from __future__ import annotations

import re

from ftc.runtime.training.trackers import open_tracker
from ftc.spec.plan import read_plan

from conftest import REPO


def _written_tags(job, ftc, tmp_path, monkeypatch) -> set[str]:
    """The ``ftc.record_id*`` tags MLflow holds after ftc's tracker saw checkpoint step-000016."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # a SQLite store keeps its artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = job(logger={"provider": "mlflow", "provider_config": {"tracking_uri": uri}}, output_dir="out")
    assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
    plan = read_plan(tmp_path / "plan.json")
    checkpoint = tmp_path / "out" / "checkpoints" / "step-000016"
    checkpoint.mkdir(parents=True)
    (checkpoint / "lineage.json").write_text("{}")
    tracker = open_tracker(plan, main=True)
    tracker.start(plan, tmp_path / "out")
    tracker.checkpoint(checkpoint, {"record_id": "sha256:" + "0" * 64})
    tracker.finish("FINISHED", [])
    assert not tracker.broken
    tags = MlflowClient(tracking_uri=uri).get_run(tracker.link["run_id"]).data.tags
    return {name for name in tags if name.startswith("ftc.record_id")}


def test_the_docs_name_the_checkpoint_tags_the_tracker_writes(job, ftc, tmp_path, monkeypatch):
    written = _written_tags(job, ftc, tmp_path, monkeypatch)
    assert written == {"ftc.record_id", "ftc.record_id.step-000016"}
    for page in (REPO / "README.md", REPO / "docs" / "trackers.md"):
        named = set(re.findall(r"`(ftc\.record_id[^`]*)`", page.read_text(encoding="utf-8")))
        assert named <= written, f"{page.name} names {sorted(named - written)}, the trackers write {sorted(written)}"
    assert "ftc.record_id.step-000016" in (REPO / "docs" / "trackers.md").read_text(encoding="utf-8")
