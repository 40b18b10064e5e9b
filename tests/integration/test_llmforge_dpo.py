"""llmforge's two DPO configs (Mistral 7B on A10s and on A100s), verbatim but for their model (a tiny random Mistral)
and data (local preference pairs): each trains on CPU with its own number of processes, its ZeRO-3 file and its
LoRA, the reference log-probabilities computed in the run's processes with the config's batch size."""

from __future__ import annotations

import pytest

from conftest import ftc_process, metrics, read_json
from support.preference import LLMFORGE, llmforge_dpo_job

pytestmark = pytest.mark.slow

CONFIGS = LLMFORGE / "configs/end-to-end-examples/fine-tune-preference/configs/dpo-training"


def _ftc(*args) -> tuple[int, str]:
    proc = ftc_process(*args)
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


@pytest.mark.parametrize(
    ("config", "processes", "reference_batch"), [("mistral_a10.yaml", 12, 2), ("mistral_a100.yaml", 6, 16)]
)
def test_llmforges_dpo_config_trains_on_cpu_with_its_processes(
    config, processes, reference_batch, tmp_path, monkeypatch
):
    import support.preference

    monkeypatch.setattr(support.preference, "LLMFORGE_DPO", CONFIGS / config)
    spec = llmforge_dpo_job(tmp_path, pairs=48)
    code, out = _ftc("compile", spec, "-o", tmp_path / "p.json")
    assert code == 0, out
    plan = read_json(tmp_path / "p.json")
    assert plan["spec"]["task"] == "preference_tuning"
    assert plan["spec"]["preference_tuning_config"]["logprob_processor_scaling_config"]["batch_size"] == reference_batch
    assert plan["launch"]["world_size"] == processes and plan["deepspeed"]["zero_optimization"]["stage"] == 3
    code, out = _ftc("run", tmp_path / "p.json")
    assert code == 0, out[-3000:]
    assert f"{processes} process(es) on cpu, fp32, ZeRO stage 3" in out
    assert "loss: sigmoid (beta 0.01) against the model as training starts" in out
    assert "reference log-probabilities of the train pairs computed: sha256:" in out
    evals = metrics(tmp_path / "output", "eval")
    assert len(evals) == 4 and all("eval_reward_accuracy" in e for e in evals)  # before training, then each epoch
    last = sorted((tmp_path / "output" / "checkpoints").glob("step-*"))[-1]
    pinned = {d["role"]: d["reference_logprobs"]["pairs"] for d in read_json(last / "lineage.json")["datasets"]}
    assert pinned == {"train": 48, "valid": 4}
