"""Context extension in stages, as the seed's FAQ describes it: a tiny model trained at its native 512 positions,
then continued from that checkpoint at 2,048 with rope_scaling (linear, factor 4) on examples longer than 512
tokens; its export loads in plain transformers with the scaling in config.json, and generates."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from conftest import read_json
from support.models import PROMPT_FORMAT, arithmetic_examples, write_jsonl

pytestmark = pytest.mark.slow

ROPE = {"rope_type": "linear", "factor": 4}

#: run by a python that cannot import ftc: the export is all it needs
_PLAIN = r"""
import json, sys
sys.modules["ftc"] = None
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, prompt = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=False)
with torch.no_grad():
    out = model.generate(ids, max_new_tokens=8, do_sample=False, tokenizer=tokenizer)
rotary = model.model.rotary_emb
new = out[0, ids.shape[1]:].tolist()
stops = model.generation_config.eos_token_id
stops = stops if isinstance(stops, list) else [stops]
answer = tokenizer.decode(new[: next((i for i, t in enumerate(new) if t in stops), len(new))])
print(json.dumps({"prompt_tokens": ids.shape[1], "new_tokens": out.shape[1] - ids.shape[1], "answer": answer,
                  "rope_type": rotary.rope_type, "max_positions": model.config.max_position_embeddings,
                  "tokenizer_max_length": tokenizer.model_max_length}))
"""


def _long_examples(n: int, seed: int) -> list[dict]:
    """Chat examples of 60 additions each: several hundred tokens past the tiny model's 512."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pairs = [(rng.randint(0, 49), rng.randint(0, 49)) for _ in range(60)]
        question = " ".join(f"What is {a} + {b}?" for a, b in pairs)
        answer = " ".join(f"{a} + {b} = {a + b}" for a, b in pairs)
        out.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return out


def test_two_stage_context_extension_exports_a_model_plain_transformers_serves(job, ftc, tmp_path, tiny_model):
    from transformers import AutoTokenizer

    write_jsonl(tmp_path / "short.jsonl", arithmetic_examples(32, seed=3))
    write_jsonl(tmp_path / "long.jsonl", _long_examples(6, seed=4))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    lengths = [len(tokenizer(json.dumps(e))["input_ids"]) for e in _long_examples(6, seed=4)]
    assert min(lengths) > 700  # every example of stage 2 reaches positions the model never saw

    common = dict(generation_config={"prompt_format": PROMPT_FORMAT, "stopping_sequences": ["</s>"]}, lora_config=None)
    stage1 = dict(train_path="short.jsonl", context_length=512, output_dir="stage1", num_epochs=1)
    r = ftc("compile", job(name="stage1.yaml", **common, **stage1), "-o", tmp_path / "stage1.plan.json")
    assert r.code == 0, r.err
    assert ftc("run", tmp_path / "stage1.plan.json").code == 0

    # stage 2 without rope_scaling: refused, naming the fix
    stage2 = dict(
        initial_base_model_ckpt_path="stage1/best", train_path="long.jsonl", valid_path="long.jsonl",
        context_length=2048, output_dir="stage2", train_batch_size_per_device=2, num_epochs=1,
    )  # fmt: skip
    r = ftc("compile", job(name="stage2.yaml", **common, **stage2), "-o", tmp_path / "stage2.plan.json")
    assert r.code == 3 and "extend the model's context with rope_scaling" in r.err

    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    spec = job(name="stage2.yaml", **{**common, "lora_config": lora}, **stage2, rope_scaling=ROPE)
    r = ftc("compile", spec, "-o", tmp_path / "stage2.plan.json")
    assert r.code == 0, r.err
    r = ftc("run", tmp_path / "stage2.plan.json")
    assert r.code == 0, r.err
    summary = read_json(tmp_path / "stage2" / "best" / "plan.json")["spec"]
    assert summary["rope_scaling"]["factor"] == 4.0 and summary["context_length"] == 2048
    # the lineage of stage 2 against stage 1: the scaling is one of the settings that differ
    r = ftc("lineage", "diff", tmp_path / "stage1" / "best", tmp_path / "stage2" / "best")
    assert "spec.rope_scaling: null -> " in r.out and "spec.context_length: 512 -> 2048" in r.out, r.out + r.err

    export = tmp_path / "export"
    r = ftc("export", tmp_path / "stage2", "-o", export)
    assert r.code == 0, r.err
    config = read_json(export / "config.json")
    assert config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    assert config["rope_parameters"]["rope_type"] == "linear" and config["max_position_embeddings"] == 2048

    prompt = " ".join(f"What is {a} + {a}?" for a in range(90))  # a prompt past 512 tokens
    run = subprocess.run([sys.executable, "-c", _PLAIN, str(export), prompt], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    plain = json.loads(run.stdout)
    assert plain["rope_type"] == "linear" and plain["max_positions"] == plain["tokenizer_max_length"] == 2048
    assert plain["prompt_tokens"] > 512 and plain["new_tokens"] > 0
    # ftc generate on the checkpoint (the adapter on its base, loaded with the plan's scaling) answers as the export
    r = ftc("generate", tmp_path / "stage2", "--prompt", prompt, "--max-new-tokens", "8")
    assert r.code == 0 and r.out == plain["answer"] + "\n", r.err


def test_a_full_run_with_rope_scaling_saves_it_in_its_checkpoints_config(job, ftc, tmp_path):
    write_jsonl(tmp_path / "long.jsonl", _long_examples(2, seed=5))
    spec = dict(
        train_path="long.jsonl", valid_path=None, lora_config=None, context_length=1024, output_dir="out",
        rope_scaling={"rope_type": "dynamic", "factor": 2}, num_epochs=1,
    )  # fmt: skip
    assert ftc("compile", job(**spec), "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == 0, r.err
    config = read_json(tmp_path / "out" / "latest" / "config.json")
    assert config["rope_parameters"]["rope_type"] == "dynamic" and config["rope_parameters"]["factor"] == 2.0
    assert config["max_position_embeddings"] == 512  # dynamic counts its scaling from the native length
    assert read_json(tmp_path / "out" / "latest" / "tokenizer_config.json")["model_max_length"] == 1024
