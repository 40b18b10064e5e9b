"""Experiment trackers on real servers and files: a real `mlflow server` (SQLite) read back through MLflow's client,
an offline W&B run read back from its own files, TensorBoard event files read back with EventAccumulator; each
matched to metrics.jsonl and the lineage record_ids. An unreachable tracker stops the run before training (or, when
the spec says so, the run trains without it); a credential in the environment lands nowhere."""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import metrics, read_json
from support.servers import silent_server, wandb_records

pytestmark = pytest.mark.slow


def _records(out):
    checkpoints = sorted((out / "checkpoints").iterdir())
    return {c.name: read_json(c / "lineage.json")["record_id"] for c in checkpoints}


def _assert_same_curve(found: dict[int, float], records: list[dict], key: str) -> None:
    expected = {r["step"]: r[key] for r in records if r.get(key) is not None}
    assert found.keys() == expected.keys()
    assert all(found[s] == pytest.approx(expected[s], rel=1e-6) for s in expected)


def test_mlflow_receives_params_metrics_lineage_tags_and_artifacts(trained, mlflow_url, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    token = "ftc-test-token-never-written-0123"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)  # read by MLflow's client; the test server ignores it
    logger = {"provider": "mlflow", "provider_config": {"tracking_uri": mlflow_url, "experiment_name": "ftc-tests"}}
    out = trained(logger=logger, num_epochs=2)
    summary = read_json(out / "summary.json")
    run_id = summary["tracker"]["run_id"]
    assert summary["tracker"]["url"].startswith(mlflow_url) and run_id in summary["tracker"]["url"]

    client = MlflowClient(mlflow_url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    plan = read_json(tmp_path / "plan.json")
    assert run.data.params["learning_rate"] == str(plan["spec"]["learning_rate"])
    assert run.data.params["lora_config.r"] == "4"
    assert run.data.tags["ftc.plan_id"] == plan["plan_id"]
    assert run.data.tags["ftc.input.train"] == plan["inputs"]["train"]["digest"]
    for name, record_id in _records(out).items():
        assert run.data.tags[f"ftc.record_id.{name}"] == record_id
        artifact = client.download_artifacts(run_id, f"lineage/{name}/lineage.json", str(tmp_path / "dl" / name))
        assert json.loads(open(artifact).read())["record_id"] == record_id
    history = lambda key: {m.step: m.value for m in client.get_metric_history(run_id, key)}  # noqa: E731
    _assert_same_curve(history("train/loss"), metrics(out, "train"), "loss")
    _assert_same_curve(history("eval/loss"), metrics(out, "eval"), "eval_loss")
    assert "summary.json" in {a.path for a in client.list_artifacts(run_id)}

    for path in [tmp_path / "plan.json", *out.rglob("*")]:  # the credential reached no file ftc wrote
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_an_unreachable_tracker_stops_the_run_before_training(job, ftc, tmp_path):
    with silent_server() as url:  # accepts connections, never answers
        spec = job(logger={"provider": "mlflow", "provider_config": {"tracking_uri": url}})
        assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
        r = ftc("run", tmp_path / "plan.json")
    assert r.code == ExitCode.INPUT_UNREACHABLE
    assert f"logger: MLflow at {url} cannot be reached" in r.err and "if_unreachable: warn" in r.err
    assert not (tmp_path / "output" / "checkpoints").exists()


def test_an_mlflow_experiment_that_does_not_exist_stops_the_run_when_the_spec_says_not_to_make_it(
    job, ftc, tmp_path, mlflow_url
):
    """llmforge's create_experiment_if_not_exists: false: exit 4 before training, naming the experiment."""
    config = {"tracking_uri": mlflow_url, "experiment_name": "not-made", "create_experiment_if_not_exists": False}
    spec = job(logger={"provider": "mlflow", "provider_config": config})
    assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE
    assert f"logger: MLflow at {mlflow_url} has no experiment 'not-made'" in r.err
    assert "create_experiment_if_not_exists: true" in r.err
    assert not (tmp_path / "output" / "checkpoints").exists()


def test_a_password_in_the_environments_tracking_uri_is_never_shown(job, ftc, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:hunter2-secret@127.0.0.1:9")
    assert ftc("compile", job(logger={"provider": "mlflow"}), "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == ExitCode.INPUT_UNREACHABLE
    assert "MLflow at http://***@127.0.0.1:9 cannot be reached" in r.err and "hunter2" not in r.err


def test_a_tracker_marked_warn_is_skipped_and_training_goes_on(job, ftc, tmp_path):
    spec = job(
        logger={"provider": "mlflow", "provider_config": {"tracking_uri": "http://127.0.0.1:9"},
                "if_unreachable": "warn"},
    )  # fmt: skip
    assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == 0, r.err
    assert "cannot be reached" in r.err and "training with local metrics only" in r.err
    assert "tracker" not in read_json(tmp_path / "output" / "summary.json")
    assert "FTC_TRACKER_OFF" not in os.environ  # set for this run's processes only


def _key(item) -> str:
    """A W&B record item's key: flat, or nested (``train/loss`` is stored as ["train", "loss"])."""
    return item.key or "/".join(item.nested_key)


def _wandb_run_file(folder) -> tuple[str, list]:
    """An offline run folder's run file and its records, once they end with the run's exit record. The file is
    written by W&B's own service process; should it still be writing when ``ftc run`` returns, it gets a bounded
    wait."""
    (path,) = glob.glob(str(Path(folder) / "run-*.wandb"))
    deadline = time.monotonic() + 60
    while True:
        records = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return path, records
        time.sleep(0.5)


def _wandb_logs(out) -> str:
    """The tails of W&B's own logs of the run: what a failure of this test shows."""
    return "\n".join(
        f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(out.glob("wandb/offline-run-*/logs/*.log"))
    )


def test_wandb_offline_run_holds_the_metrics_and_the_lineage(job, ftc, tmp_path):
    logger = {"provider": "wandb", "provider_config": {"mode": "offline", "project": "ftc-tests"}}
    assert ftc("compile", job(logger=logger), "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    out = tmp_path / "output"
    assert r.code == 0, r.err
    assert "tracking in Weights & Biases (offline)" in r.err and " failed (" not in r.err, r.err + _wandb_logs(out)
    (folder,) = glob.glob(str(out / "wandb" / "offline-run-*"))
    path, records = _wandb_run_file(folder)
    history, summary, config, artifacts = {}, {}, {}, []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {_key(i): json.loads(i.value_json) for i in record.history.item}
            if "train/loss" in items:
                history.setdefault("train/loss", {})[items["_step"]] = items["train/loss"]
            if "eval/loss" in items:
                history.setdefault("eval/loss", {})[items["_step"]] = items["eval/loss"]
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "run":
            config.update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "artifact":
            artifacts.append(record.artifact.name)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "train/loss" in history, f"{path} holds {kinds}\n{r.err}{_wandb_logs(out)}"
    _assert_same_curve(history["train/loss"], metrics(out, "train"), "loss")
    _assert_same_curve(history["eval/loss"], metrics(out, "eval"), "eval_loss")
    records = _records(out)
    assert {summary[f"ftc.record_id.{name}"] for name in records} == set(records.values())
    assert sorted(artifacts) == [f"lineage-{name}" for name in sorted(records)]
    assert config["ftc.plan_id"] == read_json(out / "summary.json")["plan_id"]


def test_tensorboard_event_files_hold_the_curves(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = trained(logger={"provider": "tensorboard"})
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = lambda tag: {e.step: e.value for e in events.Scalars(tag)}  # noqa: E731
    _assert_same_curve(scalars("train/loss"), metrics(out, "train"), "loss")
    _assert_same_curve(scalars("eval/loss"), metrics(out, "eval"), "eval_loss")
    assert read_json(out / "summary.json")["tracker"]["provider"] == "tensorboard"


def test_a_tracker_that_is_not_set_up_is_refused_before_training(job, ftc, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    cases = [
        ({"provider": "mlflow"}, ExitCode.USAGE, "no tracking_uri in the spec and no MLFLOW_TRACKING_URI"),
        ({"provider": "wandb"}, ExitCode.INPUT_UNREACHABLE, "no WANDB_API_KEY in the environment and no `wandb login`"),
    ]
    for i, (logger, code, message) in enumerate(cases):
        plan = tmp_path / f"p{i}.json"
        assert ftc("compile", job(logger=logger, output_dir=f"out{i}"), "-o", plan).code == 0
        r = ftc("run", plan)
        assert r.code == code and message in r.err, r.err
        assert not (tmp_path / f"out{i}" / "checkpoints").exists()


def _interrupt(out) -> str:
    """Leave ``out`` as a run stopped after its first epoch's checkpoint (step 4 of 8); the tracker run id it kept."""
    shutil.rmtree(out / "checkpoints" / "step-000008")
    (out / "summary.json").unlink()
    return read_json(out / "tracker.json").get("run_id", "")


def test_a_resumed_run_continues_its_mlflow_run(trained, mlflow_url, ftc, tmp_path):
    from mlflow import MlflowClient

    logger = {"provider": "mlflow", "provider_config": {"tracking_uri": mlflow_url, "experiment_name": "ftc-resume"}}
    out = trained(logger=logger, num_epochs=2)
    first = metrics(out, "train")
    started = read_json(out / "summary.json")["tracker"]["run_id"]
    run_id = _interrupt(out)
    assert run_id == started  # tracker.json names the run from its start
    r = ftc("run", tmp_path / "plan.json", "--resume")
    assert r.code == 0, r.err
    assert "(continuing it after step 4)" in r.err
    assert read_json(out / "summary.json")["tracker"]["run_id"] == run_id
    client = MlflowClient(mlflow_url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ftc.resumed_at_step"] == "4"
    assert run.data.tags["ftc.record_id.step-000008"] == read_json(out / "checkpoints/step-000008/lineage.json")[
        "record_id"]  # fmt: skip
    logged: dict[int, list[float]] = {}
    for m in client.get_metric_history(run_id, "train/loss"):
        logged.setdefault(m.step, []).append(m.value)
    # steps 1-4 once; 5-8 by the interrupted run and again by the resumed one: equal, as resuming is exact here
    assert {s: len(v) for s, v in logged.items()} == {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2, 7: 2, 8: 2}
    assert all(v == pytest.approx(r["loss"], rel=1e-6) for r in first for v in logged[r["step"]])
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_a_resumed_run_whose_mlflow_run_was_deleted_starts_a_new_one(trained, mlflow_url, ftc, tmp_path):
    from mlflow import MlflowClient

    logger = {"provider": "mlflow", "provider_config": {"tracking_uri": mlflow_url, "experiment_name": "ftc-deleted"}}
    out = trained(logger=logger, num_epochs=2)
    run_id = _interrupt(out)
    MlflowClient(mlflow_url).delete_run(run_id)
    r = ftc("run", tmp_path / "plan.json", "--resume")
    assert r.code == 0, r.err
    assert f"MLflow has no run {run_id} any more (the interrupted run's); starting a new one" in r.err
    new = read_json(out / "summary.json")["tracker"]["run_id"]
    assert new != run_id and read_json(out / "tracker.json")["run_id"] == new
    run = MlflowClient(mlflow_url).get_run(new)
    assert run.data.tags["ftc.resumed_at_step"] == "4" and run.info.status == "FINISHED"


def test_a_resumed_run_continues_its_wandb_run(trained, ftc, tmp_path):
    out = trained(logger={"provider": "wandb", "provider_config": {"mode": "offline", "project": "ftc-tests"}},
                  num_epochs=2)  # fmt: skip
    run_id = _interrupt(out)
    time.sleep(1.1)  # W&B names an offline folder by the second it starts in: a resume comes later than this
    r = ftc("run", tmp_path / "plan.json", "--resume")
    assert r.code == 0, r.err
    assert "(continuing it after step 4)" in r.err
    folders = sorted(glob.glob(str(out / "wandb" / "offline-run-*")))
    assert len(folders) == 2 and all(f.endswith(f"-{run_id}") for f in folders)  # `wandb sync` joins them
    _, records = _wandb_run_file(folders[1])
    steps = sorted(
        json.loads(next(i.value_json for i in rec.history.item if _key(i) == "_step"))
        for rec in records if rec.WhichOneof("record_type") == "history"
    )  # fmt: skip
    assert steps[0] == 5 and steps[-1] == 8
    resumed = [
        json.loads(i.value_json) for rec in records if rec.WhichOneof("record_type") == "summary"
        for i in rec.summary.update if _key(i) == "ftc.resumed_at_step"
    ]  # fmt: skip
    assert resumed == [4]


def test_a_resumed_run_purges_the_interrupted_tensorboard_events_after_its_checkpoint(trained, ftc, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = trained(logger={"provider": "tensorboard"}, num_epochs=2)
    _interrupt(out)
    r = ftc("run", tmp_path / "plan.json", "--resume")
    assert r.code == 0, r.err
    assert "(continuing it after step 4)" in r.err
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # once each: the interrupted run's 5-8 are purged
    _assert_same_curve({e.step: e.value for e in events.Scalars("train/loss")}, metrics(out, "train"), "loss")


def test_a_tracker_json_that_cannot_be_written_is_a_warning_and_training_goes_on(trained, ftc, tmp_path):
    out = trained(logger={"provider": "tensorboard"}, num_epochs=2)
    _interrupt(out)
    (out / "tracker.json").unlink()
    (out / "tracker.json").mkdir()  # in the way: the link cannot be written there
    r = ftc("run", tmp_path / "plan.json", "--resume")
    assert r.code == 0, r.err
    assert "warning: cannot keep where the tracker's run is" in r.err
    assert "a resumed run would start a new one" in r.err
    assert (out / "checkpoints" / "step-000008" / "lineage.json").is_file()  # training went on to the end


def test_a_link_planted_at_tracker_json_is_neither_written_through_nor_replaced(trained, ftc, tmp_path):
    out = trained(logger={"provider": "tensorboard"}, num_epochs=2)
    _interrupt(out)
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    (out / "tracker.json").unlink()
    (out / "tracker.json").symlink_to(victim)
    r = ftc("run", tmp_path / "plan.json", "--resume")
    assert r.code == 0, r.err
    assert "warning: cannot keep where the tracker's run is" in r.err and "is a symbolic link" in r.err
    assert victim.read_text() == "precious" and (out / "tracker.json").is_symlink()
    assert (out / "checkpoints" / "step-000008" / "lineage.json").is_file()


def test_a_password_holding_at_in_mlflows_uri_is_shown_nowhere_not_even_in_mlflows_own_lines(
    job, ftc, tmp_path, mlflow_url
):
    import subprocess
    import sys

    uri = mlflow_url.replace("://", "://alice:hunter2@tail@")  # MLflow's client sends it as basic auth
    spec = job(logger={"provider": "mlflow", "provider_config": {"experiment_name": "ftc-redaction"}})
    assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "run", str(tmp_path / "plan.json")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr
    assert "tracking in MLflow at http://***@127.0.0.1:" in shown
    assert "hunter2" not in shown and "tail@" not in shown
    out = tmp_path / "output"
    for name in ("tracker.json", "summary.json"):
        text = (out / name).read_text()
        assert "hunter2" not in text and "tail@" not in text and "http://***@127.0.0.1:" in text, name
