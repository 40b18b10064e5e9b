"""`ftc reproduce`: a checkpoint's own plan rerun from its pinned inputs into a fresh folder, and the verdict: bitwise
reproduced, numerically reproduced (within the tolerance), or not reproduced (exit 16) with the likely causes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import LORA, age, read_json, spec_in_s3

pytestmark = pytest.mark.slow


def _reseal(checkpoint: Path, **environment_packages: str) -> None:
    """Rewrite a checkpoint's record for its files as they are now (with other package versions, if given), as
    someone covering a change would: the record verifies, and only a rerun can tell."""
    from ftc.lineage.record import LINEAGE_FILE, checkpoint_section, seal

    record = read_json(checkpoint / LINEAGE_FILE)
    record["checkpoint"] = {**record["checkpoint"], **checkpoint_section(checkpoint)}
    record["environment"]["packages"].update(environment_packages)
    body = {k: v for k, v in record.items() if k not in ("record_id", "measured")}
    (checkpoint / LINEAGE_FILE).write_text(json.dumps(seal(body)))


def _nudge(path: Path, amount: float, relative: bool) -> str:
    """Add ``amount`` (times the tensor's largest value when ``relative``) to one element of the first tensor of a
    safetensors file; its name."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    t = tensors[name].clone()
    t.view(-1)[0] += amount * (float(t.abs().max()) if relative else 1.0)
    tensors[name] = t.to(torch.float32) if t.dtype == torch.float32 else t
    save_file(tensors, str(path))
    return name


def test_a_run_reproduces_bitwise_and_the_rerun_names_its_original(trained, ftc, tmp_path):
    out = trained(lora_config=LORA, num_epochs=2, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    r = ftc("reproduce", out, "-o", tmp_path / "rerun")
    assert r.code == 0, r.err
    assert r.out.startswith("bitwise reproduced: ")
    report = read_json(tmp_path / "rerun" / "reproduction.json")
    assert report["verdict"] == "bitwise reproduced"
    assert set(report["files"].values()) == {"same"} and "adapter_model.safetensors" in report["files"]
    assert [e["original"] for e in report["evals"]] == [e["rerun"] for e in report["evals"]]
    rerun = tmp_path / "rerun" / "checkpoints" / original.name
    record = read_json(rerun / "lineage.json")
    [origin] = [p for p in record["parents"] if p["relation"] == "reproduction-of"]
    assert origin["record_id"] == read_json(original / "lineage.json")["record_id"]
    verified = ftc("lineage", "verify", rerun)
    assert verified.code == 0, verified.err
    assert f"re-hashed parent: checkpoint {out}" in verified.out  # the audit is part of the chain, named as given
    assert ftc("report", tmp_path / "rerun", "-o", tmp_path / "report.html").code == 0
    page = (tmp_path / "report.html").read_text()
    assert '<span class="ok">bitwise reproduced</span>' in page and "reproduction-of" in page
    assert ftc("export", rerun, "-o", tmp_path / "export").code == 0
    card = (tmp_path / "export" / "README.md").read_text()
    assert "## Reproduction" in card and "from the same plan and pinned inputs: **bitwise reproduced**." in card


def test_the_rerun_keeps_the_checkpoint_path_as_it_was_given(trained, ftc, tmp_path, monkeypatch):
    out = trained(lora_config=LORA)
    original = (out / "best").resolve()
    monkeypatch.chdir(out.parent)
    given = f"{out.name}/checkpoints/{original.name}"  # relative, as a user types it
    r = ftc("reproduce", given, "-o", tmp_path / "rerun")
    assert r.code == 0, r.err
    rerun = tmp_path / "rerun" / "checkpoints" / original.name
    [origin] = [p for p in read_json(rerun / "lineage.json")["parents"] if p["relation"] == "reproduction-of"]
    assert origin["source"]["given"] == given  # not the absolute path it resolved to
    assert ftc("lineage", "verify", rerun).code == 0  # found by its location, relative to the rerun


def test_the_original_is_read_once_verified_then_remembered(trained, ftc, tmp_path, monkeypatch):
    # the audit re-hashes every file of the original; the run's own check of it (in the launcher, and in every rank)
    # finds those digests in the stat cache instead of reading it all again
    import ftc.stores.hashing as hashing

    out = trained(lora_config=LORA, num_epochs=2, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    age(out)  # the stat cache trusts only files not modified in the last second
    hashed: list[str] = []
    sha256_file = hashing._sha256_file
    monkeypatch.setattr(hashing, "_sha256_file", lambda path: hashed.append(str(path)) or sha256_file(path))
    r = ftc("reproduce", out, "-o", tmp_path / "rerun")
    assert r.code == 0, r.err
    ours = sorted(p for p in hashed if p.startswith(str(original) + "/"))
    assert ours and ours == sorted(set(ours))  # every file of the original, once each
    assert {Path(p).name for p in ours} >= {"adapter_model.safetensors", "lineage.json"}


def test_an_earlier_checkpoint_is_reproduced_up_to_its_step(trained, ftc, tmp_path):
    out = trained(lora_config=None, num_epochs=2, train_batch_size_per_device=4)
    first = out / "checkpoints" / "step-000004"
    r = ftc("reproduce", first, "-o", tmp_path / "rerun")
    assert r.code == 0, r.err
    assert r.out.startswith("bitwise reproduced: ")
    assert [p.name for p in (tmp_path / "rerun" / "checkpoints").iterdir()] == ["step-000004"]  # it stopped there


def test_the_second_stage_of_a_chain_reproduces_without_rebuilding_the_first(two_stages, ftc, tmp_path):
    r = ftc("reproduce", two_stages / "stage2", "-o", tmp_path / "rerun")
    assert r.code == 0, r.err
    assert r.out.startswith("bitwise reproduced: ")
    assert "chain verified (2 record(s))" in r.err  # stage 1 was verified, not rerun
    assert sorted(p.name for p in (tmp_path / "rerun").iterdir() if not p.name.startswith(".")) == [
        "best", "checkpoints", "latest", "metrics.jsonl", "reproduction.json", "summary.json"
    ]  # fmt: skip


def test_a_rerun_in_other_processes_writes_the_same_bytes(two_stages, tmp_path):
    """Python randomizes set order per process: an adapter config written from a set (peft's target_modules) would
    differ between the run and its rerun. Two reruns in processes with different hash seeds are both bitwise."""
    import os
    import subprocess
    import sys

    for seed in ("0", "1"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-m", "ftc.cli", "reproduce", two_stages / "stage2", "-o", tmp_path / f"rerun-{seed}"],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert "\nbitwise reproduced: " in "\n" + done.stdout, done.stdout[-2000:]


def test_a_checkpoint_of_a_resumed_run_reproduces_bitwise_to_an_uninterrupted_run(trained, ftc, tmp_path):
    out = trained(lora_config=None, num_epochs=2, train_batch_size_per_device=4)
    steps = sorted((out / "checkpoints").glob("step-*"))
    shutil.rmtree(steps[-1])  # stopped after the first epoch
    (out / "summary.json").unlink()
    resumed = ftc("run", tmp_path / "plan.json", "--resume")
    assert resumed.code == 0 and "resuming from step-000004" in resumed.err, resumed.err
    final = out / "checkpoints" / steps[-1].name
    assert read_json(final / "lineage.json")["execution"]["resumed_from"]["checkpoint"] == "step-000004"
    r = ftc("reproduce", final, "-o", tmp_path / "rerun")  # the rerun runs straight through
    assert r.code == 0, r.err
    assert r.out.startswith("bitwise reproduced: ")
    rerun = read_json(tmp_path / "rerun" / "checkpoints" / steps[-1].name / "lineage.json")
    assert "resumed_from" not in rerun["execution"]


def test_weights_within_the_tolerance_are_numerically_reproduced_and_other_packages_named(trained, ftc, tmp_path):
    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    copy = original.parent / "step-copy"  # beside it: the record locates the inputs relative to the checkpoint
    shutil.copytree(original, copy)
    tensor = _nudge(copy / "model.safetensors", 1e-4, relative=True)
    _reseal(copy, torch="9.9.9")
    assert ftc("lineage", "verify", copy).code == 0  # the record covers the change: only a rerun tells
    r = ftc("reproduce", copy, "-o", tmp_path / "rerun")
    assert r.code == 0, r.err
    assert r.out.startswith("numerically reproduced: ")
    assert f"model.safetensors {tensor}: max |diff|" in r.out
    assert 'environment package torch: "9.9.9" -> ' in r.out  # the likely cause, from the two records
    report = read_json(tmp_path / "rerun" / "reproduction.json")
    assert report["verdict"] == "numerically reproduced"
    assert report["tensors"][0]["tensor"] == tensor and report["tensors"][0]["within"] is True
    assert report["tolerance"] == {"rtol": 0.01, "atol": 1e-06}


@pytest.mark.parametrize("while_", ["training", "comparing"])
def test_an_original_written_while_the_rerun_trains_is_not_compared(trained, ftc, tmp_path, monkeypatch, while_):
    """Verified before the rerun, read after it: the original's weights must still be the bytes its record names,
    and still be once they are compared."""
    import ftc.runtime.launch.local as local
    import ftc.runtime.launch.reproduce as reproduce

    from support.writes import written_after

    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    copy = original.parent / "step-copy"  # a copy whose weights differ a little: the comparison reads them
    shutil.copytree(original, copy)
    _nudge(copy / "model.safetensors", 1e-4, relative=True)
    _reseal(copy)
    module, name = (local, "run_plan") if while_ == "training" else (reproduce, "_tensor_differences")
    written_after(monkeypatch, module, name, copy / "model.safetensors", b"\0")
    r = ftc("reproduce", copy, "-o", tmp_path / "rerun")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    if while_ == "training":
        assert f"{copy / 'model.safetensors'}: no longer the bytes its lineage record names" in r.err
    else:
        assert f"{copy}: changed while ftc compared it with the rerun" in r.err
    assert "fix: restore the checkpoint" in r.err and not (tmp_path / "rerun" / "reproduction.json").exists()


def test_weights_outside_the_tolerance_are_not_reproduced(trained, ftc, tmp_path):
    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    copy = original.parent / "step-copy"
    shutil.copytree(original, copy)
    tensor = _nudge(copy / "model.safetensors", 1.0, relative=True)
    _reseal(copy)
    r = ftc("reproduce", copy, "-o", tmp_path / "rerun")
    assert r.code == ExitCode.NOT_REPRODUCED, r.err
    assert "not reproduced: " in r.err and f"{tensor}: max |diff|" in r.err and "OUTSIDE the tolerance" in r.err
    assert "likely causes" in r.err and "the rerun and this report are kept" in r.err
    assert read_json(tmp_path / "rerun" / "reproduction.json")["verdict"] == "not reproduced"


def test_a_tampered_checkpoint_is_refused_before_anything_runs(trained, ftc, tmp_path):
    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    weights = original / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    r = ftc("reproduce", out, "-o", tmp_path / "rerun")
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert "model.safetensors" in r.err
    assert not (tmp_path / "rerun").exists()


def test_an_output_folder_that_is_not_empty_is_refused(trained, ftc, tmp_path):
    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    (tmp_path / "rerun").mkdir()
    (tmp_path / "rerun" / "x").write_text("mine")
    r = ftc("reproduce", out, "-o", tmp_path / "rerun")
    assert r.code == ExitCode.USAGE
    assert "exists and is not empty" in r.err
    assert (tmp_path / "rerun" / "x").read_text() == "mine"


def test_an_input_whose_pinned_version_is_gone_is_named_with_exit_4(
    s3, job, ftc, tmp_path, tiny_model, monkeypatch, tmp_path_factory
):
    s3.put_bucket_versioning(Bucket=s3.bucket, VersioningConfiguration={"Status": "Enabled"})
    spec = spec_in_s3(s3, job, tmp_path, tiny_model, lora_config=None, num_epochs=1)
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    assert ftc("run", tmp_path / "p.json").code == 0
    version = read_json(tmp_path / "p.json")["inputs"]["train"]["pin"]["version_id"]
    s3.delete_object(Bucket=s3.bucket, Key="data/train.jsonl", VersionId=version)
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path_factory.mktemp("empty-cache")))  # nothing kept from the run
    r = ftc("reproduce", tmp_path / "output", "-o", tmp_path / "rerun")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert f"s3://{s3.bucket}/data/train.jsonl" in r.err


def test_an_export_is_refused_with_where_to_look(trained, ftc, tmp_path):
    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    assert ftc("export", out, "-o", tmp_path / "export").code == 0
    r = ftc("reproduce", tmp_path / "export", "-o", tmp_path / "rerun")
    assert r.code == ExitCode.USAGE
    assert "an export; reproduce the checkpoint it was made from" in r.err
    assert not (tmp_path / "rerun").exists()


# -- a checkpoint from someone else: its plan is outside input, checked like a compiled one, never obeyed in where
# -- it reports or writes ---------------------------------------------------------------------------------------------


def _reseal_plan(checkpoint: Path, edit) -> str:
    """Edit the plan a checkpoint carries and reseal it (plan_id) and its record (plan_id, file digests,
    record_id), as whoever hands over a checkpoint can: `ftc lineage verify` still says it is consistent. The new
    plan's text."""
    from ftc.lineage.record import LINEAGE_FILE, checkpoint_section, seal
    from ftc.spec.plan_format import plan_text, seal_plan

    plan = read_json(checkpoint / "plan.json")
    edit(plan)
    plan = seal_plan(plan)
    (checkpoint / "plan.json").write_text(plan_text(plan))
    record = read_json(checkpoint / LINEAGE_FILE)
    record["plan"]["plan_id"] = plan["plan_id"]
    record["checkpoint"] = {**record["checkpoint"], **checkpoint_section(checkpoint)}
    body = {k: v for k, v in record.items() if k not in ("record_id", "measured")}
    (checkpoint / LINEAGE_FILE).write_text(json.dumps(seal(body)))
    return plan_text(plan)


class _Listener:
    """An HTTP server on 127.0.0.1 that answers everything with {} and keeps every request (method, path,
    headers)."""

    def __init__(self):
        import http.server
        import threading

        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                requests.append((self.command, self.path, dict(self.headers)))
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    server = _Listener()
    yield server
    server.close()


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def test_a_checkpoint_naming_a_tracker_sends_it_nothing(trained, ftc, tmp_path, listener, monkeypatch):
    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    logger = {"provider": "mlflow", "provider_config": {"tracking_uri": listener.url}, "if_unreachable": "fail"}
    hostile = _reseal_plan(original, lambda plan: plan["spec"].update(logger=logger))
    assert ftc("lineage", "verify", original).code == 0  # consistent: only what is done with it can be safe
    # the plan's logger reads its credentials from the environment; the checkpoint's author chose the address
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "SECRET")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", listener.url)  # even so: no tracker unless --logger names one
    r = ftc("reproduce", original, "-o", tmp_path / "rerun")
    assert r.code == 0, r.err
    assert listener.requests == []
    rerun = tmp_path / "rerun"
    report = read_json(rerun / "reproduction.json")
    # the same weights; only ftc_state.json, which names the plan_id, differs from what the edited plan resealed
    assert {p for p, state in report["files"].items() if state != "same"} == {"ftc_state.json"}
    assert not (rerun / "tracker.json").exists()
    assert (rerun / "checkpoints" / original.name / "plan.json").read_text() == hostile  # the same plan, untouched
    assert all(b"SECRET" not in p.read_bytes() for p in _files_under(rerun))


def test_a_tracker_named_on_the_command_line_is_fed_from_the_environment_alone(
    trained, ftc, tmp_path, listener, monkeypatch
):
    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    logger = {"provider": "mlflow", "provider_config": {"tracking_uri": listener.url}, "if_unreachable": "fail"}
    _reseal_plan(original, lambda plan: plan["spec"].update(logger=logger))
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "SECRET")
    r = ftc("reproduce", original, "-o", tmp_path / "rerun", "--logger", "tensorboard")
    assert r.code == 0, r.err
    assert listener.requests == []
    events = list((tmp_path / "rerun" / "tensorboard").glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in (tmp_path / "rerun").iterdir())
    assert read_json(tmp_path / "rerun" / "tracker.json")["provider"] == "tensorboard"


def test_a_checkpoint_whose_plan_has_deepspeed_monitors_is_refused_and_writes_nothing(trained, ftc, tmp_path):
    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    elsewhere = tmp_path / "elsewhere"

    def monitors(plan):
        plan["deepspeed"]["flops_profiler"] = {"enabled": True, "profile_step": 1, "output_file": str(victim)}
        plan["deepspeed"]["csv_monitor"] = {"enabled": True, "output_path": str(elsewhere), "job_name": "x"}

    _reseal_plan(original, monitors)
    assert ftc("lineage", "verify", original).code == 0
    r = ftc("reproduce", original, "-o", tmp_path / "rerun")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert "the plan it carries is not valid" in r.err
    assert (
        "$.deepspeed: Additional properties are not allowed ('csv_monitor', 'flops_profiler' were unexpected)" in r.err
    )
    assert "Traceback" not in r.err
    assert victim.read_text() == "precious\n"
    assert not elsewhere.exists() and not (tmp_path / "rerun").exists()


def test_a_checkpoint_whose_plan_logs_to_an_absolute_folder_is_refused(trained, ftc, tmp_path):
    out = trained(lora_config=None, num_epochs=1, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    elsewhere = tmp_path / "elsewhere"
    logger = {"provider": "tensorboard", "provider_config": {"log_dir": str(elsewhere)}, "if_unreachable": "fail"}
    _reseal_plan(original, lambda plan: plan["spec"].update(logger=logger))
    r = ftc("reproduce", original, "-o", tmp_path / "rerun", "--logger", "tensorboard")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert "$.spec.logger.provider_config.log_dir: the event files go inside the output folder" in r.err
    assert not elsewhere.exists() and not (tmp_path / "rerun").exists()


def test_a_rerun_into_the_checkpoint_or_an_input_it_reads_is_refused(job, ftc, tmp_path, tiny_model):
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    assert ftc("compile", job(lora_config=None, num_epochs=1, initial_base_model_ckpt_path=str(base),
                              output_dir="out"), "-o", tmp_path / "plan.json").code == 0  # fmt: skip
    assert ftc("run", tmp_path / "plan.json").code == 0
    original = (tmp_path / "out" / "best").resolve()
    before = sorted(p.name for p in original.iterdir())
    for inside, what in (
        (original / "rerun", "inside the checkpoint it reproduces"),
        (tmp_path / "out" / "best" / "rerun", "inside the checkpoint it reproduces"),  # through the link
        (base / "rerun", "inside its base_model input"),
    ):
        r = ftc("reproduce", original, "-o", inside)
        assert r.code == ExitCode.USAGE, r.err
        assert what in r.err and "fix: give a new folder outside it" in r.err
        assert not inside.exists()
    assert sorted(p.name for p in original.iterdir()) == before
    assert ftc("lineage", "verify", original).code == 0


def test_data_inspect_of_a_checkpoint_does_not_send_credentials_to_an_endpoint_its_plan_names(
    trained, ftc, tmp_path, listener, monkeypatch
):
    out = trained(num_epochs=1, train_batch_size_per_device=4)
    original = (out / "best").resolve()
    dvc = {
        "source": "dvc", "uri": "dvc://example.com/data.git/valid.jsonl@abc", "pinned": True, "kind": "file",
        "digest": "sha256:" + "0" * 64, "size": 1,
        "pin": {"md5": "0" * 32, "remote": "s3://their-bucket/dvc", "endpoint": listener.url},
    }  # fmt: skip
    _reseal_plan(original, lambda plan: plan["inputs"].update(valid=dvc))
    assert ftc("lineage", "verify", original).code == 0  # consistent: only what is done with it can be safe
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "KEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
    r = ftc("data", "inspect", original, "--split", "valid", "-n", "1", "--no-color")
    assert r.code == ExitCode.INPUT_UNCONFIGURED, r.err
    assert f"through the S3 endpoint {listener.url}" in r.err and "fix: if you trust that endpoint" in r.err
    assert listener.requests == []
    r = ftc("data", "inspect", original, "-n", "1", "--no-color")  # the train split reads no such input
    assert r.code == 0, r.err
