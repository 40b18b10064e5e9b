"""llmforge's Llama Guard 2 config, verbatim but for its model (a tiny random Llama): its worker_resources, its
ZeRO-3 file with the optimizer and parameters offloaded to CPU memory, and its LoRA on every linear layer with the
embeddings and the output layer, trained by the local backend on CPU with the config's 4 processes."""

from __future__ import annotations

import pytest

from conftest import ftc_process, metrics, read_json
from support.llmforge import llama_guard_2_job

pytestmark = pytest.mark.slow

TARGETS = {"q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head"}


def _ftc(*args) -> tuple[int, str]:
    proc = ftc_process(*args)
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def test_the_llama_guard_2_config_trains_on_cpu_and_records_its_ray_resources(tmp_path):
    spec = llama_guard_2_job(tmp_path)
    code, out = _ftc("compile", spec, "-o", tmp_path / "p.json")
    assert code == 0, out
    plan = read_json(tmp_path / "p.json")
    assert plan["spec"]["worker_resources"] == {"anyscale/accelerator_shape:4xA10G": 0.001}
    assert plan["launch"]["world_size"] == 4 and plan["deepspeed"]["zero_optimization"]["stage"] == 3
    code, out = _ftc("run", tmp_path / "p.json")
    assert code == 0, out
    assert "4 process(es) on cpu, fp32, ZeRO stage 3" in out
    assert "resources: worker_resources {anyscale/accelerator_shape:4xA10G: 0.001} apply on Ray" in out
    final = tmp_path / "output" / "checkpoints" / "step-000002"  # 32 examples / (4 x 4 processes)
    adapter = read_json(final / "adapter_config.json")
    assert {t.rsplit(".", 1)[-1] for t in adapter["target_modules"]} == TARGETS
    assert read_json(final / "plan.json")["spec"]["worker_resources"] == plan["spec"]["worker_resources"]
    assert [t["step"] for t in metrics(tmp_path / "output", "train")] == [1, 2]
