"""From checkpoint to a model people use, on real tiny models: `ftc export` (an adapter merged into the exact base it
was trained on, loaded by plain transformers in a process that cannot import ftc), `ftc generate` on a checkpoint
and on its export (identical greedy answers), `ftc eval`, and the lineage of an export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_json
from support.models import PROMPT_FORMAT, write_jsonl

pytestmark = pytest.mark.slow

FORMAT = {"prompt_format": PROMPT_FORMAT, "stopping_sequences": ["</s>"]}
PROMPT = "What is 12 + 7?"

#: run by a python that cannot import ftc: the export is all it needs
_PLAIN_TRANSFORMERS = r"""
import json, sys
sys.modules["ftc"] = None  # `import ftc` fails here
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

folder, prompt = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
config = GenerationConfig.from_pretrained(folder)
messages = [{"role": "user", "content": prompt}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=False)
with torch.no_grad():
    logits = model(ids).logits[0].tolist()
    out = model.generate(ids, max_new_tokens=16, do_sample=False, generation_config=config, tokenizer=tokenizer)
    out = out[0, ids.shape[1]:].tolist()
stops = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
answer = out[: next((i for i, t in enumerate(out) if t in stops), len(out))]
print(json.dumps({"ids": ids[0].tolist(), "logits": logits, "answer": tokenizer.decode(answer)}))
"""


def _plain(folder: Path, prompt: str = PROMPT) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", _PLAIN_TRANSFORMERS, str(folder), prompt], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@pytest.fixture
def lora_run(trained):
    return trained(generation_config=FORMAT, num_epochs=2, learning_rate=5e-3)


def _peft_logits(checkpoint: Path, base: Path, ids: list[int]):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), checkpoint)
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits[0]


def test_merged_export_is_the_adapter_on_its_base_and_needs_no_ftc(lora_run, tiny_model, ftc, tmp_path):
    import torch

    export = tmp_path / "export"
    r = ftc("export", lora_run, "-o", export, "--max-shard-size", "200KB")
    assert r.code == 0, r.err
    assert "exported merged into its base" in r.out
    names = {p.name for p in export.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "chat_template.jinja",
            "generation_config.json", "README.md", "lineage.json"} <= names  # fmt: skip
    assert len([n for n in names if n.endswith(".safetensors")]) > 1  # sharded, with its index
    assert not names & {"adapter_config.json", "adapter_model.safetensors", "training_state", "plan.json"}

    plain = _plain(export)
    checkpoint = (lora_run / "best").resolve()
    expected = _peft_logits(checkpoint, tiny_model, plain["ids"])
    assert torch.allclose(torch.tensor(plain["logits"]), expected, atol=1e-5, rtol=1e-5)

    # greedy: ftc generate on the checkpoint (adapter on its base), on the export, and plain transformers agree
    on_checkpoint = ftc("generate", lora_run, "--prompt", PROMPT, "--max-new-tokens", "16")
    on_export = ftc("generate", export, "--prompt", PROMPT, "--max-new-tokens", "16")
    assert on_checkpoint.code == 0 and on_export.code == 0, on_checkpoint.err + on_export.err
    assert on_checkpoint.out == on_export.out == plain["answer"] + "\n"

    generation = read_json(export / "generation_config.json")
    assert generation["eos_token_id"] == 2  # "</s>": the stop sequence and the end of the assistant template
    card = (export / "README.md").read_text()
    assert "base_model_relation: finetune" in card
    assert "base_model:" not in card  # own weights: not the published ftc-tests/tiny-llama
    assert "Your own weights of the ftc\\-tests/tiny\\-llama architecture" in card  # names escaped as Markdown
    assert "type: loss" in card


def test_export_lineage_verifies_down_the_chain_and_a_tampered_export_does_not(lora_run, ftc, tmp_path):
    export = tmp_path / "export"
    assert ftc("export", lora_run, "-o", export).code == 0
    record = read_json(export / "lineage.json")
    parent = record["parents"][0]
    assert (parent["role"], parent["relation"], record["checkpoint"]["kind"]) == ("checkpoint", "merged", "merged")
    assert parent["record_id"] == read_json(lora_run / "best" / "lineage.json")["record_id"]
    r = ftc("lineage", "verify", export)
    assert r.code == 0, r.err
    assert "2 lineage record(s)" in r.out and "re-hashed parent: checkpoint" in r.out
    assert "re-hashed parent: base model" in r.out
    shown = ftc("lineage", "show", export).out
    assert "merged: checkpoint" in shown and "adapter: base model" in shown

    weights = export / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    r = ftc("lineage", "verify", export)
    assert r.code == 12
    assert "model.safetensors" in r.err and "expected sha256:" in r.err
    r = ftc("generate", export, "--prompt", PROMPT)
    assert r.code == 12 and "nothing of it is loaded" in r.err


def test_unmerged_export_names_its_base_and_still_generates(lora_run, ftc, tmp_path):
    export = tmp_path / "adapter-export"
    r = ftc("export", lora_run, "-o", export, "--no-merge")
    assert r.code == 0, r.err
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in export.iterdir()}
    record = read_json(export / "lineage.json")
    assert record["export"]["base"]["digest"].startswith("sha256:")
    assert record["export"]["base"]["digest"] in (export / "README.md").read_text()
    assert "base_model_relation: adapter" in (export / "README.md").read_text()
    a = ftc("generate", export, "--prompt", PROMPT, "--max-new-tokens", "8")
    b = ftc("generate", lora_run, "--prompt", PROMPT, "--max-new-tokens", "8")
    assert a.code == 0 and a.out == b.out

    # the checkpoint it names is replaced by another run's: its base is not trusted for this adapter
    checkpoint = (lora_run / "best").resolve()
    moved = checkpoint.with_name("moved-away")
    checkpoint.rename(moved)
    shutil.copytree(sorted(p for p in (lora_run / "checkpoints").iterdir() if p.name.startswith("step-"))[0],
                    checkpoint, symlinks=True)  # fmt: skip
    r = ftc("generate", export, "--prompt", PROMPT)
    assert r.code == 12 and "was exported from checkpoint record" in r.err


def test_export_refuses_what_it_cannot_do_safely(lora_run, ftc, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    r = ftc("export", lora_run, "-o", taken)
    assert r.code == 2 and "already exists" in r.err
    assert (taken / "keep.txt").read_text() == "mine"

    # a checkpoint that is not what its record says is not exported
    checkpoint = (lora_run / "best").resolve()
    (checkpoint / "adapter_config.json").write_text("{}")
    r = ftc("export", lora_run, "-o", tmp_path / "never")
    assert r.code == 12 and "adapter_config.json" in r.err and "nothing of it is loaded" in r.err
    assert not (tmp_path / "never").exists() and not list(tmp_path.glob(".never*"))


def test_a_changed_base_stops_export_and_generate(job, ftc, tmp_path, tiny_model):
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    plan = tmp_path / "plan.json"
    assert ftc("compile", job(initial_base_model_ckpt_path=str(base), generation_config=FORMAT), "-o", plan).code == 0
    assert ftc("run", plan).code == 0
    (base / "config.json").write_text((base / "config.json").read_text().replace("{", '{"edited": 1, ', 1))
    for args in (("export", tmp_path / "output", "-o", tmp_path / "export"), ("generate", tmp_path / "output")):
        r = ftc(*args, "--prompt", PROMPT) if args[0] == "generate" else ftc(*args)
        assert r.code == 6, r.err
        assert "the base weights step-" in r.err and "config.json" in r.err
    assert not (tmp_path / "export").exists()


def test_a_checkpoint_or_base_written_while_export_or_generate_reads_it_is_refused(
    job, ftc, tmp_path, tiny_model, monkeypatch
):
    """Verified, then read: a writer that gets in between must not end in an export whose record vouches for bytes
    nobody checked, or in answers from them."""
    import ftc.runtime.training as training
    import ftc.serving.export as export

    from support.writes import written_after

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    plan = tmp_path / "plan.json"
    assert ftc("compile", job(initial_base_model_ckpt_path=str(base), generation_config=FORMAT), "-o", plan).code == 0
    assert ftc("run", plan).code == 0
    checkpoint = (tmp_path / "output" / "best").resolve()
    load_adapter = written_after(monkeypatch, training, "pretrained_adapter", base / "config.json")
    r = ftc("generate", tmp_path / "output", "--prompt", PROMPT)
    assert r.code == 12, r.err
    assert f"{checkpoint}: it or its base weights changed while ftc read them, after they were verified" in r.err
    assert f"\n    {base / 'config.json'}\n    fix: try again once nothing writes it" in r.err

    monkeypatch.setattr(training, "pretrained_adapter", load_adapter)
    shutil.copy(tiny_model / "config.json", base / "config.json")  # the base as pinned again
    written_after(monkeypatch, export, "model_card", checkpoint / "adapter_model.safetensors", b"\0")
    r = ftc("export", tmp_path / "output", "-o", tmp_path / "export", "--no-merge")
    assert r.code == 12, r.err
    assert f"\n    {checkpoint / 'adapter_model.safetensors'}\n" in r.err
    assert not (tmp_path / "export").exists()


def test_eval_scores_exact_match_and_writes_every_answer(lora_run, ftc, tmp_path):
    data = write_jsonl(
        tmp_path / "eval.jsonl",
        [{"messages": [{"role": "user", "content": f"What is {a} + 1?"}, {"role": "assistant", "content": "x"}]}
         for a in range(3)],
    )  # fmt: skip
    out = tmp_path / "answers.jsonl"
    r = ftc("eval", lora_run, "--data", data, "-o", out, "--max-new-tokens", "6")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result["examples"] == 3 == len(rows)
    assert "threshold" not in result and "accuracy" not in result  # not a classifier: exact match only
    assert result["exact_match"] == sum(row["exact_match"] for row in rows) / 3
    assert {row["line"] for row in rows} == {1, 2, 3} and all(row["expected"] == "x" for row in rows)
    direct = ftc("generate", lora_run, "--prompt", "What is 0 + 1?", "--max-new-tokens", "6")
    assert direct.out == rows[0]["output"] + "\n"

    asked = write_jsonl(tmp_path / "ask.jsonl", [{"messages": [{"role": "user", "content": "What is 0 + 1?"}]}] * 2)
    both = ftc("generate", lora_run, "--messages", asked, "--max-new-tokens", "6")
    assert both.code == 0, both.err
    answers = [json.loads(line) for line in both.out.splitlines()]  # one JSON line per conversation
    assert [a["line"] for a in answers] == [1, 2] and [a["answer"] + "\n" for a in answers] == [direct.out] * 2
    assert {a["finish_reason"] for a in answers} <= {"stop", "length"}

    (tmp_path / "bad.jsonl").write_text('{"messages": []}\n')
    r = ftc("eval", lora_run, "--data", tmp_path / "bad.jsonl")
    assert r.code == 7 and "bad.jsonl:1" in r.err
    r = ftc("generate", lora_run)
    assert r.code == 2 and "--prompt" in r.err


def test_generation_during_training_records_exact_match_that_rises_on_a_learnable_task(job, ftc, tmp_path):
    """The seed guide's classifier shape: the whole task as the system message, the verdict as the answer."""
    import random

    rng = random.Random(0)

    def examples(n):
        out = []
        for _ in range(n):
            unsafe = rng.random() < 0.5
            words = " ".join(rng.choice(["red", "blue", "green", "cat", "dog"]) for _ in range(3))
            text = f"{words} {'bomb' if unsafe else 'cake'}"
            out.append({"messages": [
                {"role": "system", "content": "Is the message safe?"},
                {"role": "user", "content": text},
                {"role": "assistant", "content": "unsafe" if unsafe else "safe"},
            ]})  # fmt: skip
        return out

    write_jsonl(tmp_path / "data" / "train.jsonl", examples(96))
    write_jsonl(tmp_path / "data" / "valid.jsonl", examples(24))
    spec = job(
        generation_config=FORMAT, lora_config=None, num_epochs=3, learning_rate=3e-3,
        train_batch_size_per_device=4, evaluation={"generate": True, "max_new_tokens": 8},
    )  # fmt: skip
    assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == 0, r.err
    evals = [e for e in map(json.loads, (tmp_path / "output" / "metrics.jsonl").read_text().splitlines())
             if e["type"] == "eval"]  # fmt: skip
    matches = [e["exact_match"] for e in evals]
    assert len(matches) == 4 and matches[-1] > matches[0] and matches[-1] >= 0.9, matches
    assert read_json(tmp_path / "output" / "summary.json")["exact_match"] == matches[-1]
    record = read_json(tmp_path / "output" / "best" / "lineage.json")
    assert [e["exact_match"] for e in record["results"]["evals"]][-1] == matches[-1]
    assert "exact match" in r.err


def test_what_the_serving_verbs_refuse_says_why_and_what_to_do(lora_run, ftc, tmp_path):
    export = tmp_path / "export"
    assert ftc("export", lora_run, "-o", export).code == 0
    r = ftc("export", export, "-o", tmp_path / "again")
    assert r.code == 2 and "is already an export; export the checkpoint it was made from" in r.err

    os.mkfifo(tmp_path / "fifo")
    r = ftc("generate", lora_run, "--messages", tmp_path / "fifo")
    assert r.code == 2 and "is a FIFO (named pipe), not a regular file" in r.err
    r = ftc("eval", lora_run, "--data", tmp_path / "missing.jsonl")
    assert r.code == 2 and "missing.jsonl: cannot be read" in r.err
    data = write_jsonl(tmp_path / "test.jsonl", [{"messages": [{"role": "user", "content": PROMPT},
                                                               {"role": "assistant", "content": "19"}]}])  # fmt: skip
    r = ftc("eval", lora_run, "--data", data, "--threshold", "0.5")
    assert r.code == 2 and "--threshold is for a classifier; " in r.err and "scores it by exact match" in r.err
    assert "fix: drop --threshold" in r.err and not (tmp_path / "test.eval.jsonl").exists()
    r = ftc("report", tmp_path, "-o", tmp_path / "r.html")
    assert r.code == 2 and "no lineage.json here" in r.err and not (tmp_path / "r.html").exists()

    # a checkpoint without the plan that wrote it (as older ftc wrote them) cannot be served: nothing says its format
    copy = tmp_path / "old-checkpoint"
    shutil.copytree((lora_run / "best").resolve(), copy)
    (copy / "plan.json").unlink()
    r = ftc("generate", copy, "--prompt", PROMPT)
    assert r.code == 12 and "plan.json" in r.err and "not in the lineage record" not in r.err


def test_outputs_that_would_land_in_the_checkpoint_or_through_a_link_are_refused_before_any_work(
    lora_run, ftc, tmp_path
):
    checkpoint = (lora_run / "best").resolve()
    data = tmp_path / "test.jsonl"
    write_jsonl(data, [{"messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "19"}]}])
    (tmp_path / "empty").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "empty")
    r = ftc("export", lora_run, "-o", tmp_path / "linked")
    assert r.code == 2 and f"-o {tmp_path / 'linked'} is a symbolic link (to {tmp_path / 'empty'})" in r.err
    assert "merging" not in r.err  # refused before the merge, not after it
    for argv in (
        ["export", lora_run, "-o", checkpoint / "export"],
        ["eval", checkpoint, "--data", data, "-o", checkpoint / "eval.jsonl"],
        ["report", lora_run, "-o", lora_run / "latest" / "report.html"],
    ):
        r = ftc(*argv)
        assert r.code == 2 and "which this command reads" in r.err, (argv, r.err)
    assert ftc("lineage", "verify", lora_run).code == 0  # the checkpoint is as it was

    # a link planted at the export's temporary name is removed, not written through
    (tmp_path / ".export.export-tmp").symlink_to(tmp_path / "empty")
    r = ftc("export", lora_run, "-o", tmp_path / "export")
    assert r.code == 0, r.err
    assert list((tmp_path / "empty").iterdir()) == [] and ftc("lineage", "verify", tmp_path / "export").code == 0


def test_export_names_a_base_given_by_a_relative_path_by_its_path(trained, tiny_model, ftc, tmp_path):
    import os

    out = trained(initial_base_model_ckpt_path=os.path.relpath(tiny_model, tmp_path), num_epochs=1)
    r = ftc("export", out, "-o", tmp_path / "export")
    assert r.code == 0, r.err
    merging = next(line for line in r.err.splitlines() if "merging the adapter into its base " in line)
    assert f"its base {tiny_model} in" in merging, merging  # not the way to it from the checkpoint (a/../../b)
