"""`ftc run --resume` trusts nothing unverified: a checkpoint is re-hashed against its lineage record before any of
it is read, its training state is safetensors and JSON that ftc wrote (a planted pickle is refused, never run), and
the run records where it resumed. A finished run is left as it is; a run with nothing to resume says so."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import read_json

TWO_EPOCHS = dict(lora_config=None, num_epochs=2, train_batch_size_per_device=4)
STATE = Path("training_state/state/mp_rank_00_model_states.safetensors")


@pytest.fixture
def interrupted(trained):
    """A run whose last checkpoint is gone, as if it was stopped after its first epoch: (plan, output, checkpoint)."""
    out = trained(**TWO_EPOCHS)
    steps = sorted((out / "checkpoints").glob("step-*"))
    assert [p.name for p in steps] == ["step-000004", "step-000008"]
    shutil.rmtree(steps[-1])
    (out / "summary.json").unlink()
    return out.parent / "plan.json", out, steps[0]


def _reseal(checkpoint: Path) -> None:
    """Rewrite the checkpoint's lineage record for its files as they are now, as someone covering a change would."""
    from ftc.lineage.record import LINEAGE_FILE, checkpoint_section, seal

    record = read_json(checkpoint / LINEAGE_FILE)
    record["checkpoint"] = {**record["checkpoint"], **checkpoint_section(checkpoint)}
    (checkpoint / LINEAGE_FILE).write_text(json.dumps(seal({k: v for k, v in record.items() if k != "record_id"})))


class _Payload:
    """Unpickling this runs a shell command: what a hostile training_state file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_resumed_run_records_the_checkpoint_it_resumed_from(interrupted, ftc):
    plan, out, checkpoint = interrupted
    resumed_from = read_json(checkpoint / "lineage.json")
    r = ftc("run", plan, "--resume")
    assert r.code == 0, r.err
    assert "resuming from step-000004" in r.err
    final = read_json(out / "checkpoints" / "step-000008" / "lineage.json")
    assert final["execution"]["resumed_from"] == {
        "checkpoint": "step-000004",
        "digest": resumed_from["checkpoint"]["digest"],
        "record_id": resumed_from["record_id"],
    }
    assert ftc("lineage", "verify", out).code == 0


def test_a_flipped_byte_in_the_training_state_is_refused_before_anything_is_loaded(interrupted, ftc):
    plan, out, checkpoint = interrupted
    state = checkpoint / STATE
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01
    state.write_bytes(bytes(data))
    r = ftc("run", plan, "--resume")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert "cannot resume from it: the checkpoint is not what its lineage record says" in r.err
    assert f"{STATE}: expected sha256:" in r.err and ", found sha256:" in r.err
    assert "fix: restore the checkpoint, or move it aside to resume from the one before it" in r.err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000004"]  # nothing trained, nothing new


def test_a_checkpoint_written_while_it_is_resumed_from_stops_the_run(interrupted, ftc, monkeypatch):
    """Verified, then read: a writer that gets in between (here: right after the training state is loaded) must not
    leave the run going on from bytes nobody checked."""
    import ftc.runtime.training.loop as loop

    from support.writes import written_after

    plan, out, checkpoint = interrupted
    written_after(monkeypatch, loop, "load_training_state", checkpoint / STATE, b"\0")
    r = ftc("run", plan, "--resume")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert f"{checkpoint}: changed while this run resumed from it, after it was verified" in r.err
    assert f"\n    {checkpoint / STATE}\n    fix: resume again once nothing writes the checkpoint" in r.err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000004"]


def test_an_edited_record_is_refused(interrupted, ftc):
    plan, _, checkpoint = interrupted
    record = read_json(checkpoint / "lineage.json")
    record["results"]["eval_loss"] = 0.0
    (checkpoint / "lineage.json").write_text(json.dumps(record))
    r = ftc("run", plan, "--resume")
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert "the lineage record was edited" in r.err


def test_a_planted_pickle_is_refused_and_never_runs(interrupted, ftc, tmp_path):
    import torch

    plan, out, checkpoint = interrupted
    marker = tmp_path / "the-payload-ran"
    torch.save({"module": _Payload(marker)}, checkpoint / STATE)
    _reseal(checkpoint)  # the record matches the planted file: only the format ftc reads stands in the way
    assert ftc("lineage", "verify", checkpoint).code == 0
    r = ftc("run", plan, "--resume")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert f"{checkpoint / STATE}: torch's pickle format (ftc never unpickles), not training state ftc wrote; " \
        "refused without reading it" in r.err  # fmt: skip
    assert "fix: resume only from checkpoints ftc wrote, or start again into a new output_dir" in r.err
    assert not marker.exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000004"]


def test_a_planted_state_naming_a_type_ftc_never_writes_is_refused(interrupted, ftc):
    from safetensors import safe_open
    from safetensors.torch import save_file

    plan, out, checkpoint = interrupted
    with safe_open(str(checkpoint / STATE), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    metadata["structure"] = json.dumps({"$dict": [["module", {"$value": "system", "state": "touch /tmp/x"}]]})
    save_file(tensors, str(checkpoint / STATE), metadata=metadata)
    _reseal(checkpoint)
    r = ftc("run", plan, "--resume")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert (
        f"{checkpoint / STATE}: its structure is not one ftc writes (ValueError); refused without reading it" in r.err
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000004"]


def test_resuming_a_finished_run_changes_nothing(trained, ftc, tmp_path):
    out = trained(**TWO_EPOCHS)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    r = ftc("run", tmp_path / "plan.json", "--resume")
    assert r.code == 0, r.err
    assert "step-000008 is the last checkpoint of this plan: the run is complete; nothing to resume" in r.err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_resume_with_nothing_to_resume_says_so_and_starts(job, ftc, tmp_path):
    ftc("compile", job(**TWO_EPOCHS), "-o", tmp_path / "p.json")
    r = ftc("run", tmp_path / "p.json", "--resume")
    assert r.code == 0, r.err
    assert "holds no checkpoint of this plan yet; starting from the beginning" in r.err
    assert (tmp_path / "output" / "checkpoints" / "step-000008").is_dir()


def test_a_full_output_folder_is_refused_before_training_starts(trained, ftc, tmp_path):
    trained(**TWO_EPOCHS)
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == ExitCode.USAGE
    assert "already holds checkpoints (step-000008)" in r.err
    assert "process(es) on" not in r.err  # refused by the launcher: no training process was set up


def test_a_second_run_into_an_output_folder_being_written_is_refused(job, ftc, tmp_path):
    from ftc.runtime.launch.lock import output_lock

    ftc("compile", job(**TWO_EPOCHS), "-o", tmp_path / "p.json")
    plan_id = read_json(tmp_path / "p.json")["plan_id"]
    with output_lock(tmp_path / "output", node_rank=0, plan_id=plan_id):  # another run, writing
        r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.USAGE
    assert f"{tmp_path / 'output'} is being written by another ftc run (process {os.getpid()} on " in r.err
    assert "fix: wait for it to end, or stop it" in r.err
    assert not (tmp_path / "output" / "checkpoints").exists()
    assert ftc("run", tmp_path / "p.json").code == 0  # once it has ended


def test_a_killed_run_leaves_no_lock_behind(job, ftc, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    ftc("compile", job(**TWO_EPOCHS), "-o", tmp_path / "p.json")
    hold = (
        "import sys, time; from pathlib import Path; from ftc.runtime.launch.lock import output_lock\n"
        "with output_lock(Path(sys.argv[1]), node_rank=0, plan_id='sha256:' + '0' * 64):\n"
        "    print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "output")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert ftc("run", tmp_path / "p.json").code == ExitCode.USAGE
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    started = time.monotonic()
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err  # the kernel released the lock with the process: nothing stale to clean up
    assert time.monotonic() - started < 120


def test_a_lora_checkpoint_of_a_tied_model_holds_no_frozen_weight_and_resumes_to_the_same_adapter(
    trained, ftc, tmp_path
):
    """lm_head tied to embed_tokens (SmolLM2, Llama 3.2): DeepSpeed's own filter names the tied weight once and would
    save the other name whole in every checkpoint."""
    from support.models import build_tiny_model

    build_tiny_model(tmp_path / "tied", tie_word_embeddings=True)
    out = trained(initial_base_model_ckpt_path=str(tmp_path / "tied"), num_epochs=2, train_batch_size_per_device=4)
    first, last = sorted((out / "checkpoints").glob("step-*"))
    embedding = 512 * 64 * 4  # bytes of the tied matrix, fp32
    # the module's file holds the adapter and, on one process (no ZeRO), its optimizer state: ~39 kB, not the
    # 131 kB tied matrix
    assert (first / STATE).stat().st_size < embedding / 2
    sizes = read_json(first / "ftc_state.json")["sizes"]
    assert sizes["weights"] == (first / "adapter_model.safetensors").stat().st_size
    assert sizes["training_state"] < embedding
    uninterrupted = (last / "adapter_model.safetensors").read_bytes()
    shutil.rmtree(last)
    (out / "summary.json").unlink()
    r = ftc("run", out.parent / "plan.json", "--resume")
    assert r.code == 0, r.err
    assert "resuming from step-000004" in r.err
    assert (last / "adapter_model.safetensors").read_bytes() == uninterrupted  # bitwise: nothing needed was left out
