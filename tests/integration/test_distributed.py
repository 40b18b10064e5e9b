"""Real multi-process DeepSpeed on CPU (gloo), and resuming a run killed with SIGKILL: `ftc run` as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from ftc.errors import ExitCode

from conftest import ftc_process, metrics, read_json
from support.models import arithmetic_examples, reference_loss_sum, write_jsonl
from support.zero3_lora import ZERO3_LORA

pytestmark = pytest.mark.slow


def ftc_run(*args) -> tuple[int, str]:
    proc = ftc_process(*args)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def _eval_loss_of_saved_model(checkpoint: Path, valid: Path, plan: dict, base: Path | None = None) -> float:
    """Load the saved weights (an adapter on ``base``) with plain transformers/peft; compute the eval loss the run
    reported for them."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftc.runtime.training.batches import collate
    from ftc.runtime.training.render import renderer_for
    from ftc.runtime.training.tokens import tokenize_file
    from ftc.spec import JobSpec

    spec = JobSpec.from_dict(plan["spec"])
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(base or checkpoint, dtype=torch.float32)
    if base is not None:
        model = PeftModel.from_pretrained(model, checkpoint)
    model.eval()
    examples, _ = tokenize_file(
        valid,
        render=renderer_for(spec.generation_config.prompt_format, tokenizer),
        tokenizer=tokenizer,
        cache_file=None,
    )
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(len(examples)):
            batch = collate([(i,)], examples, pad_id=tokenizer.pad_token_id, packed=False)
            total += reference_loss_sum(model(**batch.inputs, use_cache=False).logits, batch.labels)
            tokens += batch.loss_tokens
    return total / tokens


@pytest.mark.parametrize(("stage", "compiled"), [(2, False), (3, False), (3, True)], ids=["2", "3", "3-compiled"])
def test_two_processes_train_with_zero_and_save_real_weights(job, tmp_path, stage, compiled):
    """... and with the decoder layers compiled (torch_compile): the weights saved give, uncompiled, the eval loss
    the compiled layers computed."""
    write_jsonl(tmp_path / "train64.jsonl", arithmetic_examples(64, seed=4))
    spec = job(
        train_path="train64.jsonl",
        lora_config=None,
        learning_rate=3e-3,
        num_devices=2,
        train_batch_size_per_device=8,
        deepspeed={"zero_stage": stage},
        torch_compile=compiled,
    )
    code, out = ftc_run("compile", spec, "-o", tmp_path / "p.json")
    assert code == 0, out
    code, out = ftc_run("run", tmp_path / "p.json")
    assert code == 0, out
    assert "2 process(es) on cpu" in out
    assert ("compiled layers" in out) == compiled
    final = tmp_path / "output" / "checkpoints" / "step-000004"  # 64 examples / (8 x 2 processes)
    state = read_json(final / "ftc_state.json")
    assert state["world_size"] == 2 and state["global_step"] == 4
    assert {p.name for p in final.glob("rng_state_rank*.safetensors")} == {
        "rng_state_rank0.safetensors",
        "rng_state_rank1.safetensors",
    }
    # the lineage record, written by rank 0 after every rank saved, names every rank's files
    record_files = {f["path"] for f in read_json(final / "lineage.json")["checkpoint"]["files"]}
    assert {"rng_state_rank0.safetensors", "rng_state_rank1.safetensors", "model.safetensors"} <= record_files
    assert read_json(final / "lineage.json")["execution"]["zero_stage"] == stage
    # each rank's optimizer partition, and all of the training state, in safetensors: no pickle, no DeepSpeed scripts
    state_files = sorted(p.name for p in (final / "training_state").rglob("*") if p.is_file())
    assert all(n.endswith(".safetensors") for n in state_files), state_files
    assert sum(n.endswith("_optim_states.safetensors") for n in state_files) == 2, state_files
    from safetensors.torch import load_file

    weights = load_file(final / "model.safetensors")
    assert weights and all(t.numel() > 0 for t in weights.values())  # ZeRO-3 gathered, not empty placeholders
    reproduced = _eval_loss_of_saved_model(final, tmp_path / "data" / "valid.jsonl", read_json(tmp_path / "p.json"))
    assert reproduced == pytest.approx(state["eval_loss"], abs=1e-5)


def test_zero3_lora_adapter_is_saved_whole(job, tmp_path, tiny_model):
    """... and evaluation.generate under ZeRO-3: 5 validation examples on 2 processes (one answers 2, the other 3
    and a repeat), every process joining every forward pass: no hang, and the rate ftc eval finds for the saved
    weights in one process."""
    spec = job(**ZERO3_LORA)  # the run bench/stress_shutdown.py repeats under load
    write_jsonl(tmp_path / "data" / "valid.jsonl", arithmetic_examples(5, seed=2))
    assert ftc_run("compile", spec, "-o", tmp_path / "p.json")[0] == 0
    code, out = ftc_run("run", tmp_path / "p.json")
    assert code == 0, out
    from safetensors.torch import load_file

    final = tmp_path / "output" / "checkpoints" / "step-000002"
    tensors = load_file(final / "adapter_model.safetensors")
    assert len(tensors) == 8
    assert all(t.numel() > 0 for t in tensors.values())
    assert all(t.shape[0] == 4 or t.shape[1] == 4 for t in tensors.values())  # rank-4 A and B matrices
    reproduced = _eval_loss_of_saved_model(
        final, tmp_path / "data" / "valid.jsonl", read_json(tmp_path / "p.json"), base=tiny_model
    )
    assert reproduced == pytest.approx(read_json(final / "ftc_state.json")["eval_loss"], abs=1e-5)
    evals = metrics(tmp_path / "output", "eval")
    assert len(evals) == 2 and all("exact_match" in e for e in evals)
    code, out = ftc_run("eval", final, "--data", tmp_path / "data" / "valid.jsonl", "--max-new-tokens", "12")
    assert code == 0, out
    assert json.loads(out[out.index("{") :])["exact_match"] == evals[-1]["exact_match"]


def test_a_bad_example_in_a_two_process_run_exits_with_its_code_and_message(job, tmp_path):
    records = arithmetic_examples(8, seed=1)
    records[4]["messages"][1]["content"] = "7 " * 100
    write_jsonl(tmp_path / "long.jsonl", records)
    assert ftc_run("compile", job(train_path="long.jsonl", num_devices=2), "-o", tmp_path / "p.json")[0] == 0
    code, out = ftc_run("run", tmp_path / "p.json")
    assert code == ExitCode.DATA_INVALID
    assert "long.jsonl:5: 116 tokens, longer than context_length 64" in out


def test_resume_after_sigkill_continues_exactly_where_the_uninterrupted_run_goes(job, tmp_path):
    write_jsonl(tmp_path / "train256.jsonl", arithmetic_examples(256, seed=6))
    common = dict(
        train_path="train256.jsonl",
        num_epochs=1,
        train_batch_size_per_device=4,
        learning_rate=1e-2,
        lora_config={
            "r": 4,
            "lora_dropout": 0.1,
            "target_modules": "all-linear",
        },  # dropout: the RNG state must resume too
        checkpoint_and_evaluation_frequency={"unit": "steps", "frequency": 10},
    )
    for name in ("whole", "killed"):
        assert (
            ftc_run("compile", job(name=f"{name}.yaml", output_dir=name, **common), "-o", tmp_path / f"{name}.json")[0]
            == 0
        )

    assert ftc_run("run", tmp_path / "whole.json")[0] == 0

    killed = tmp_path / "killed"
    proc = ftc_process("run", tmp_path / "killed.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        steps = (
            [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
            if (killed / "metrics.jsonl").exists()
            else []
        )
        if (killed / "checkpoints" / "step-000010").exists() and steps and max(steps) >= 13:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    assert not (killed / "checkpoints" / "step-000064").exists()

    code, out = ftc_run("run", tmp_path / "killed.json", "--resume")
    assert code == 0, out
    assert "resuming from step-" in out
    whole = tmp_path / "whole"
    assert [m["loss"] for m in metrics(killed, "train")] == [m["loss"] for m in metrics(whole, "train")]
    assert [m["step"] for m in metrics(killed, "train")] == list(range(1, 65))
    assert [m["eval_loss"] for m in metrics(killed, "eval")] == [m["eval_loss"] for m in metrics(whole, "eval")]


def test_ctrl_c_stops_with_130_and_leaves_whole_checkpoints(job, tmp_path):
    write_jsonl(tmp_path / "train96.jsonl", arithmetic_examples(96, seed=6))
    spec = job(
        train_path="train96.jsonl",
        num_epochs=1,
        train_batch_size_per_device=2,
        lora_config=None,
        checkpoint_and_evaluation_frequency={"unit": "steps", "frequency": 5},
    )
    assert ftc_run("compile", spec, "-o", tmp_path / "p.json")[0] == 0
    # a shell running this suite in the background starts it with SIGINT ignored, which children inherit: restore it
    proc = ftc_process("run", tmp_path / "p.json", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "output" / "checkpoints" / "step-000005").exists():
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, out
    assert "interrupted: checkpoints written so far are intact; continue with `ftc run PLAN --resume`" in out
    folders = list((tmp_path / "output" / "checkpoints").glob("step-*"))
    assert folders and all((p / "ftc_state.json").exists() for p in folders)  # nothing half-written looks whole
    code, out = ftc_run("run", tmp_path / "p.json", "--resume")
    assert code == 0, out


def test_two_nodes_of_one_process_rendezvous_and_write_one_checkpoint(job, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = job(num_devices=2, num_nodes=2, lora_config=None, train_batch_size_per_device=4)
    assert ftc_run("compile", spec, "-o", tmp_path / "p.json")[0] == 0
    plan = read_json(tmp_path / "p.json")
    assert "--nnodes=2" in plan["launch"]["command"]
    nodes = [
        ftc_process(
            "run", tmp_path / "p.json", "--node-rank", rank, "--master-addr", "127.0.0.1", "--master-port", port
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs
    state = read_json(tmp_path / "output" / "checkpoints" / "step-000002" / "ftc_state.json")
    assert state["world_size"] == 2
    assert "2 process(es) on cpu" in outputs[0]
    execution = read_json(tmp_path / "output" / "checkpoints" / "step-000002" / "lineage.json")["execution"]
    assert (execution["nodes"], execution["processes_per_node"], execution["world_size"]) == (2, 1, 2)


def test_a_node_rank_beyond_the_plan_is_a_usage_error(job, tmp_path):
    assert ftc_run("compile", job(num_devices=2, num_nodes=2), "-o", tmp_path / "p.json")[0] == 0
    code, out = ftc_run("run", tmp_path / "p.json", "--node-rank", "2")
    assert code == ExitCode.USAGE
    assert "--node-rank 2: the plan has 2 node(s), ranks 0 to 1" in out
