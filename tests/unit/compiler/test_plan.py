"""The plan: deterministic, pinned by content, free of machine paths, validated before use, readable, diffable."""

from __future__ import annotations

import json
import shutil

import pytest

from ftc.errors import ExitCode
from ftc.spec import job_schema
from ftc.spec.llmforge import LLMFORGE_KEYS
from ftc.spec.model import OPTIONAL_KEYS

from conftest import read_json


def test_compiling_twice_gives_byte_identical_plans(job, ftc, tmp_path):
    spec = job()
    assert ftc("compile", spec, "-o", tmp_path / "a.json").code == 0
    assert ftc("compile", spec, "-o", tmp_path / "b.json").code == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_changing_one_input_byte_changes_the_plan_id_and_the_diff_says_where(job, ftc, tmp_path):
    spec = job()
    ftc("compile", spec, "-o", tmp_path / "a.json")
    data = tmp_path / "data" / "train.jsonl"
    data.write_bytes(data.read_bytes().replace(b"What", b"what", 1))
    ftc("compile", spec, "-o", tmp_path / "b.json")
    a, b = read_json(tmp_path / "a.json"), read_json(tmp_path / "b.json")
    assert a["plan_id"] != b["plan_id"]
    assert a["spec_digest"] == b["spec_digest"]
    r = ftc("plan", "diff", tmp_path / "a.json", tmp_path / "b.json")
    assert r.code == 0
    assert r.out.splitlines() == [
        f'inputs.train.digest: "{a["inputs"]["train"]["digest"]}" -> "{b["inputs"]["train"]["digest"]}"'
    ]


def test_diff_reports_settings_and_image(job, ftc, tmp_path):
    ftc("compile", job(), "-o", tmp_path / "a.json")
    ftc("compile", job(learning_rate=0.0002, image="ftc-runtime:cpu"), "--allow-unpinned", "-o", tmp_path / "b.json")
    out = ftc("plan", "diff", tmp_path / "a.json", tmp_path / "b.json").out
    assert "spec.learning_rate: 0.0001 -> 0.0002" in out
    assert (
        'image: null -> {"note": "not reproducible: the image is named by a tag that can move", "pinned": false, '
        '"ref": "ftc-runtime:cpu", "requested": "ftc-runtime:cpu"}' in out
    )
    assert ftc("plan", "diff", tmp_path / "a.json", tmp_path / "a.json").out.strip() == "the plans are identical"


def test_plan_holds_no_machine_specific_paths(job, ftc, tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "model")
    ftc("compile", job(initial_base_model_ckpt_path="model"), "-o", tmp_path / "plans" / "plan.json")
    text = (tmp_path / "plans" / "plan.json").read_text()
    assert str(tmp_path) not in text
    plan = json.loads(text)
    assert plan["inputs"]["base_model"]["uri"] == "../model"  # relative to the plan file
    assert plan["inputs"]["train"]["uri"] == "../data/train.jsonl"
    assert plan["output"]["dir"] == "../output"


def test_plan_pins_every_input_and_fills_every_default(job, ftc, tmp_path):
    ftc("compile", job(), "-o", tmp_path / "plan.json")
    plan = read_json(tmp_path / "plan.json")
    # llmforge's spellings are normalized; Ray resources are absent when none are asked for
    assert set(plan["spec"]) == set(job_schema()["properties"]) - LLMFORGE_KEYS - set(OPTIONAL_KEYS)
    assert plan["spec"]["lr_scheduler_type"] == "cosine"
    assert plan["spec"]["lora_config"]["lora_dropout"] == 0.05
    assert plan["mode"] == "lora-new"
    base = plan["inputs"]["base_model"]
    assert base["source"] == "local" and base["pinned"] and base["kind"] == "dir"
    assert {f["path"] for f in base["files"]} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert plan["inputs"]["train"]["records"] == 16
    assert plan["inputs"]["valid"]["records"] == 4
    assert plan["image"] is None
    assert plan["architecture"]["source"] == "checkpoint"
    assert plan["architecture"]["config"]["hidden_size"] == 64


def test_context_length_defaults_to_the_model_maximum_up_to_2048(job, ftc, tmp_path):
    ftc("compile", job(context_length=None), "-o", tmp_path / "plan.json")
    assert read_json(tmp_path / "plan.json")["spec"]["context_length"] == 512


def test_launch_topology_and_deepspeed_config_are_materialized(job, ftc, tmp_path):
    spec = job(
        num_devices=4,
        num_nodes=2,
        train_batch_size_per_device=2,
        gradient_accumulation_steps=3,
        deepspeed={"zero_stage": 3},
    )
    assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
    plan = read_json(tmp_path / "plan.json")
    assert (
        plan["launch"]["nodes"] == 2 and plan["launch"]["processes_per_node"] == 2 and plan["launch"]["world_size"] == 4
    )
    assert "--nnodes=2" in plan["launch"]["command"] and "--node-rank={node_rank}" in plan["launch"]["command"]
    ds = plan["deepspeed"]
    assert ds["train_batch_size"] == 2 * 3 * 4
    assert ds["zero_optimization"] == {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}


def test_deepspeed_file_auto_values_are_filled_from_the_spec(job, ftc, tmp_path):
    (tmp_path / "ds.json").write_text(
        json.dumps(
            {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 1}}
        )
    )
    ftc(
        "compile",
        job(deepspeed={"config_path": "ds.json"}, train_batch_size_per_device=3),
        "-o",
        tmp_path / "plan.json",
    )
    plan = read_json(tmp_path / "plan.json")
    assert plan["deepspeed"]["train_micro_batch_size_per_gpu"] == 3
    assert plan["deepspeed"]["zero_optimization"] == {"stage": 1}
    assert plan["inputs"]["deepspeed_config"]["kind"] == "file"


def test_continuing_an_adapter_takes_its_lora_config(job, ftc, tmp_path, tiny_adapter):
    assert (
        ftc(
            "compile",
            job(lora_config=None, initial_adapter_model_ckpt_path=str(tiny_adapter)),
            "-o",
            tmp_path / "p.json",
        ).code
        == 0
    )
    plan = read_json(tmp_path / "p.json")
    assert plan["mode"] == "lora-continue"
    lora = plan["spec"]["lora_config"]
    assert (lora["r"], lora["lora_alpha"], sorted(lora["target_modules"])) == (4, 8, ["q_proj", "v_proj"])


def test_hub_base_weights_compile_unpinned_with_a_warning(job, ftc, tmp_path):
    r = ftc(
        "compile",
        job(model_id="meta-llama/Meta-Llama-3-8B", initial_base_model_ckpt_path=None, context_length=None),
        "-o",
        tmp_path / "p.json",
    )
    assert r.code == 0
    assert "warning: base weights hf://meta-llama/Meta-Llama-3-8B are not pinned" in r.err
    plan = read_json(tmp_path / "p.json")
    assert plan["inputs"]["base_model"] == {"source": "hub", "uri": "hf://meta-llama/Meta-Llama-3-8B", "pinned": False}
    assert plan["spec"]["context_length"] == 2048


def test_plan_to_stdout(job, ftc):
    r = ftc("compile", job(), "-o", "-")
    assert r.code == 0
    assert json.loads(r.out)["plan_id"].startswith("sha256:")


def test_recompiling_unchanged_inputs_hashes_nothing(job, ftc, tmp_path):
    spec = job()
    ftc("compile", spec, "-o", tmp_path / "p.json")
    r = ftc("compile", spec, "-o", tmp_path / "p.json")
    plan = read_json(tmp_path / "p.json")
    n = len(plan["inputs"]["base_model"]["files"]) + 2  # + train and valid
    assert f"({n} input files, {n} unchanged since last hashed)" in r.err


def test_recompiling_an_unchanged_spec_skips_schema_validation(job, tmp_path):
    """Validation is remembered per (schema, spec) digest: a recompile never imports jsonschema, an edit does."""
    import subprocess
    import sys

    spec = job()
    probe = (
        "import sys; from ftc.compiler import compile_spec; compile_spec(sys.argv[1], sys.argv[2]); "
        "print('jsonschema' in sys.modules)"
    )

    def imports_jsonschema() -> bool:
        out = subprocess.run(
            [sys.executable, "-c", probe, str(spec), str(tmp_path)], capture_output=True, text=True, check=True
        )
        return out.stdout.strip() == "True"

    assert imports_jsonschema()  # first compile validates
    assert not imports_jsonschema()  # same spec, same schema: remembered
    spec.write_text(spec.read_text() + "learning_rate: 0.001\n")
    assert imports_jsonschema()  # an edited spec is validated again


def test_an_edited_plan_is_refused(job, ftc, tmp_path):
    ftc("compile", job(), "-o", tmp_path / "p.json")
    plan = read_json(tmp_path / "p.json")
    plan["spec"]["learning_rate"] = 1.0
    (tmp_path / "p.json").write_text(json.dumps(plan))
    r = ftc("plan", "show", tmp_path / "p.json")
    assert r.code == ExitCode.PLAN_INVALID
    assert "$.plan_id: the plan was edited after compiling" in r.err


def test_a_plan_that_breaks_the_schema_is_refused(ftc, tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"plan_version": 1}))
    r = ftc("plan", "show", tmp_path / "p.json")
    assert r.code == ExitCode.PLAN_INVALID
    assert "'plan_id' is a required property" in r.err


def test_the_runtime_validates_a_plan_before_anything_else(tmp_path):
    import pytest

    from ftc.errors import PlanInvalid
    from ftc.spec.plan import read_plan

    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(PlanInvalid, match="invalid plan"):
        read_plan(tmp_path / "p.json")


def test_plan_show_is_readable(job, ftc, tmp_path):
    ftc("compile", job(), "-o", tmp_path / "p.json")
    out = ftc("plan", "show", tmp_path / "p.json").out
    assert (
        "mode      lora-new on ftc-tests/tiny-llama "
        "(architecture from the checkpoint: llama, 2 layers, hidden 64, vocab 512)" in out
    )
    assert "16 examples" in out
    assert "lora      r 4, alpha 8, dropout 0.05, targets q_proj,v_proj" in out
    assert "launch    1 node(s) x 1 process(es): python -m ftc.runtime {plan}" in out


def test_a_missing_plan_file_is_a_usage_error(ftc, tmp_path):
    r = ftc("plan", "show", tmp_path / "nope.json")
    assert r.code == ExitCode.USAGE
    assert "no such plan file; make one with `ftc compile SPEC -o" in r.err


def test_a_plan_that_is_not_json_is_refused(ftc, tmp_path):
    (tmp_path / "p.json").write_text("model_id: x\n")
    r = ftc("run", tmp_path / "p.json")
    assert r.code == ExitCode.PLAN_INVALID
    assert "not a JSON plan" in r.err


def test_show_and_diff_handle_remote_folders_pinned_per_object(job, ftc, tmp_path):
    from ftc.compiler import describe_plan, diff_plans
    from ftc.spec.plan import Plan
    from ftc.spec.plan_format import seal_plan

    ftc("compile", job(), "-o", tmp_path / "p.json")
    plan = read_json(tmp_path / "p.json")
    plan["spec"]["initial_base_model_ckpt_path"] = "s3://b/weights/"
    remote = {
        "source": "s3",
        "uri": "s3://b/weights/",
        "pinned": True,
        "kind": "dir",
        "size": 10,
        "files": [{"path": "config.json", "size": 10, "pin": {"etag": "aaa"}}],
    }
    a = Plan.from_dict(seal_plan({**plan, "inputs": {**plan["inputs"], "base_model": remote}}))
    changed = {**remote, "files": [{"path": "config.json", "size": 10, "pin": {"etag": "bbb"}}]}
    b = Plan.from_dict(seal_plan({**plan, "inputs": {**plan["inputs"], "base_model": changed}}))
    assert "s3://b/weights/  (dir, 1 files, 10 B)  (pinned per object by the s3 store)" in describe_plan(a)
    assert diff_plans(a, b) == ['inputs.base_model.files: config.json changed ({"etag": "aaa"} -> {"etag": "bbb"})']


def test_an_assistant_template_without_end_of_turn_text_is_warned_about(job, ftc, tmp_path):
    from support.models import PROMPT_FORMAT

    silent = {**PROMPT_FORMAT, "assistant": "<|assistant|>\n{instruction}"}
    r = ftc("compile", job(generation_config={"prompt_format": silent}), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert "warning: generation_config.prompt_format.assistant ends with {instruction}: no end-of-turn text" in r.err
    r = ftc("compile", job(generation_config={"prompt_format": PROMPT_FORMAT}), "-o", tmp_path / "q.json")
    assert r.code == 0 and "end-of-turn" not in r.err


def test_a_plan_from_an_older_ftc_is_read_with_the_defaults_of_newer_settings_only_when_asked(job, ftc, tmp_path):
    """A checkpoint carries the plan that wrote it and outlives that ftc: reading it to serve or describe it fills
    in the settings added since; running it is refused."""
    from ftc.errors import PlanInvalid
    from ftc.spec.plan import read_plan
    from ftc.spec.plan_format import plan_text, seal_plan

    assert ftc("compile", job(), "-o", tmp_path / "plan.json").code == 0
    document = json.loads((tmp_path / "plan.json").read_text())
    del document["spec"]["logger"], document["spec"]["evaluation"]  # as an ftc before them wrote it
    older = tmp_path / "older.json"
    older.write_text(plan_text(seal_plan(document)))
    with pytest.raises(PlanInvalid, match="no evaluation, logger"):
        read_plan(older)
    plan = read_plan(older, older_spec=True)
    assert plan.spec.logger is None and plan.spec.evaluation.generate is False
    assert plan.plan_id == seal_plan(document)["plan_id"]  # the plan's identity is its own, defaults aside


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ('{"zero_optimization": {"stage": 2, "reduce_bucket_size": NaN}}', "NaN is not JSON (numbers must be finite)"),
        ('{"gradient_clipping": 1e999}', "1e999 is too large a number"),
        ("x" * (1024 * 1024 + 1), "larger than 1 MiB, more than a DeepSpeed config file holds"),
    ],
    ids=["nan", "infinite", "oversize"],
)
def test_a_deepspeed_file_is_read_bounded_and_finite(job, ftc, tmp_path, content, found):
    (tmp_path / "ds.json").write_text(content)
    r = ftc("compile", job(deepspeed={"config_path": "ds.json"}), "-o", tmp_path / "plan.json")
    assert r.code == 4 and "Traceback" not in r.err  # as any input that cannot be read
    assert found in r.err, r.err
    assert not (tmp_path / "plan.json").exists()
