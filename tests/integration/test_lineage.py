"""Lineage records, end to end: the seed guide's continued fine-tuning (a LoRA adapter trained on half the data,
then continued on the other half) and what a changed byte or an edited record does to the chain."""

from __future__ import annotations

import json
import os
import shutil

import jsonschema
import pytest

from ftc.errors import ExitCode
from ftc.spec import lineage_schema

from conftest import metrics, read_json

pytestmark = pytest.mark.slow


def test_a_continued_adapter_starts_where_its_parent_ended_and_its_chain_verifies(two_stages, ftc):
    one, two = (metrics(two_stages / s, "eval") for s in ("stage1", "stage2"))
    assert two[0]["eval_loss"] < one[0]["eval_loss"]  # stage 2 starts from stage 1's adapter, not from scratch
    assert two[-1]["eval_loss"] < one[-1]["eval_loss"]
    r = ftc("lineage", "verify", two_stages / "stage2")
    assert r.code == 0, r.err
    assert "2 lineage record(s) in the chain recomputed" in r.out
    stage1 = read_json(two_stages / "stage1" / "best" / "lineage.json")
    stage2 = read_json(two_stages / "stage2" / "best" / "lineage.json")
    jsonschema.validate(stage2, lineage_schema(), cls=jsonschema.Draft202012Validator)  # stage 1's record is embedded
    assert stage2["datasets"][0]["examples_used"] == 48 and stage2["results"]["status"] == "complete"
    assert stage2["execution"]["world_size"] == 1 and stage2["plan"]["mode"] == "lora-continue"
    (adapter,) = [p for p in stage2["parents"] if p["role"] == "adapter"]
    assert adapter["relation"] == "adapter-continued" and adapter["record_id"] == stage1["record_id"]
    assert [p["relation"] for p in stage1["parents"]] == ["adapter"]
    assert "re-hashed parent: adapter stage1/best (" in r.out  # as the spec gave it
    assert r.out.count("re-hashed parent: base model") == 1  # the base both stages share, once
    r = ftc("lineage", "show", two_stages / "stage2")
    lines = r.out.splitlines()
    assert len(lines) == 4  # stage 2, its base, stage 1, and stage 1's base: the same base, named and not redrawn
    assert lines[0].startswith("checkpoint step-") and "adapter of ftc-tests/tiny-llama" in lines[0]
    assert f"files {stage2['checkpoint']['digest'][:19]}…" in lines[0]
    assert lines[1].startswith("├─ adapter: base model ")  # a sibling follows
    assert lines[2].startswith("└─ adapter-continued: adapter stage1/best ")  # the last sibling, as the spec gave it
    assert f"pinned {adapter['digest'][:19]}…" in lines[2] and f"record {stage1['record_id'][:19]}…" in lines[2]
    assert lines[3].startswith("   └─ adapter: base model ") and "(shown above, as the adapter parent of" in lines[3]
    plan_show = ftc("plan", "show", two_stages / "stage2.plan.json").out
    assert f"pinned {adapter['digest'][:19]}…" in plan_show  # one digest for stage 1, labelled alike in both
    paths = ftc("lineage", "show", two_stages / "stage2", "--paths").out
    assert f" at {(two_stages / 'stage1' / 'best').resolve()}" in paths
    mermaid = ftc("lineage", "show", two_stages / "stage2", "--format", "mermaid").out
    assert mermaid.startswith("flowchart BT") and "-->|adapter-continued|" in mermaid
    assert mermaid.count('["base model') == 1 and mermaid.count("-->|adapter|") == 2  # one node, two edges
    chain = json.loads(ftc("lineage", "show", two_stages / "stage2", "--format", "json").out)["chain"]
    assert [n["relation"] for n in chain] == [None, "adapter", "adapter-continued", "adapter"]
    assert [n["same_as"] for n in chain] == [None, None, None, 1]
    # auditing needs no training stack: show and verify import neither torch nor its kin
    import subprocess
    import sys

    probe = (
        "import contextlib, io, json, sys\nfrom ftc.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['lineage', 'verify', {str(two_stages / 'stage2')!r}]) == 0\n"
        f"    assert main(['lineage', 'show', {str(two_stages / 'stage2')!r}]) == 0\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'peft', 'deepspeed') if m in sys.modules]))"
    )
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def _stage3(job, ftc, two_stages):
    spec = job(
        name="stage3.yaml",
        train_path="half2.jsonl",
        lora_config=None,
        initial_adapter_model_ckpt_path="stage1/best",
        output_dir="stage3",
    )
    return ftc("compile", spec, "-o", two_stages / "stage3.plan.json")


def test_a_flipped_byte_in_a_parent_fails_verify_and_refuses_to_continue(two_stages, job, ftc):
    assert _stage3(job, ftc, two_stages).code == 0  # compiled while the parent is intact
    weights = (two_stages / "stage1" / "best" / "adapter_model.safetensors").resolve()
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    for given in ("stage2", "stage2/best"):  # the run's folder, or the checkpoint through its symlink
        r = ftc("lineage", "verify", two_stages / given)
        assert r.code == ExitCode.LINEAGE_BROKEN, r.out
        assert f"{weights}: expected sha256:" in r.err and ", found sha256:" in r.err
    # the plan compiled before the change no longer runs: its input changed
    r = ftc("run", two_stages / "stage3.plan.json")
    assert r.code == ExitCode.INPUT_CHANGED and "adapter_model.safetensors" in r.err
    # and a new stage continuing from the changed parent is refused at compile, before any plan is written
    (two_stages / "stage3.plan.json").unlink()
    r = _stage3(job, ftc, two_stages)
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert (
        "the parent checkpoint no longer matches its own lineage record" in r.err
        and "adapter_model.safetensors: expected sha256:" in r.err
    )
    assert not (two_stages / "stage3.plan.json").exists() and not (two_stages / "stage3").exists()


def test_an_edited_record_breaks_its_id_and_every_child_that_embeds_it(two_stages, job, ftc):
    record_path = (two_stages / "stage1" / "best" / "lineage.json").resolve()
    record = json.loads(record_path.read_text())
    record["results"]["eval_loss"] = 0.001  # a better number than the run reached
    record_path.write_text(json.dumps(record))
    for stage in ("stage1", "stage2"):
        r = ftc("lineage", "verify", two_stages / stage)
        assert r.code == ExitCode.LINEAGE_BROKEN
        assert "the lineage record was edited" in r.err or "lineage.json: expected sha256:" in r.err
    r = _stage3(job, ftc, two_stages)
    assert r.code == ExitCode.LINEAGE_BROKEN and "the lineage record was edited" in r.err
    assert not (two_stages / "stage3.plan.json").exists() and not (two_stages / "stage3").exists()


def test_a_moved_parent_is_reported_as_not_rehashed(two_stages, ftc):
    (two_stages / "stage1").rename(two_stages / "elsewhere")
    r = ftc("lineage", "verify", two_stages / "stage2")
    assert r.code == 0, r.err  # the records still verify, the parent's files could not be re-hashed
    assert "not re-hashed (not found here; its record was checked): adapter of step-" in r.out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("{}"), "is a required property"),
        (lambda p: p.write_text("[1, 2]"), "[1, 2] is not of type 'object'"),
        (lambda p: p.write_text("not json"), "Expecting value"),
        (lambda p: p.write_text('{"record_id": NaN}'), "NaN is not JSON (numbers must be finite)"),
        (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "JSON nested too deeply to parse"),
        (lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a regular file"),
        (lambda p: p.symlink_to("/dev/zero"), "is a character device, not a regular file"),
    ],
    ids=["empty object", "array", "not json", "NaN", "100000 deep", "fifo", "device"],
)
def test_a_malformed_record_is_a_clear_error_not_a_crash(ftc, tmp_path, make, message):
    (tmp_path / "ckpt").mkdir()
    make(tmp_path / "ckpt" / "lineage.json")
    for verb in ("verify", "show"):
        r = ftc("lineage", verb, tmp_path / "ckpt")
        assert r.code == ExitCode.LINEAGE_BROKEN and "lineage.json: not a lineage record" in r.err, r.err
        assert message in r.err


def test_a_symlink_loop_in_a_checkpoint_fails_verify(two_stages, ftc):
    checkpoint = (two_stages / "stage2" / "best").resolve()
    (checkpoint / "loop").symlink_to(checkpoint / "loop")
    r = ftc("lineage", "verify", checkpoint)
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert f"{checkpoint}/loop is a symlink loop (the link points back at itself)" in r.err


def test_a_checkpoint_without_a_record_is_a_usage_error(ftc, tmp_path):
    (tmp_path / "ckpt").mkdir()
    r = ftc("lineage", "verify", tmp_path / "ckpt")
    assert r.code == ExitCode.USAGE and "no lineage.json here" in r.err


def test_dvc_repro_reproduces_both_stages_then_only_what_changed(tmp_path):
    """The repository's dvc.yaml, run in a fresh copy: everything once, nothing the second time, only stage 2 (which
    verifies its chain) when a line of stage 2's data changes."""
    import os
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(repo / name, copy / name)
    (copy / ".dvc").mkdir()
    shutil.copy(repo / ".dvc" / "config", copy / ".dvc" / "config")
    for example in ("quickstart", "seed-continue-from-checkpoint"):
        shutil.copytree(
            repo / "examples" / example, copy / "examples" / example, ignore=shutil.ignore_patterns("output")
        )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def sh(*args: str) -> str:
        done = subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    sh("git", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.email=tests@ftc", "-c", "user.name=ftc tests", "commit", "-q", "-m", "fresh clone")
    dvc = [sys.executable, "-m", "dvc"]
    start = time.monotonic()
    first = sh(*dvc, "repro")
    assert time.monotonic() - start < 180
    for stage in ("stage1", "stage2"):
        assert f"Running stage '{stage}'" in first
    assert "verified: " in first and "2 lineage record(s) in the chain" in first  # stage 2's chain, verified
    assert "Unable to fetch remote file" not in first  # nothing asks a model hub about the tiny model's model_id
    one, two = (read_json(copy / f"runs/seed/{s}/summary.json")["evals"] for s in ("stage1", "stage2"))
    assert two[0]["eval_loss"] < one[0]["eval_loss"] and two[-1]["eval_loss"] < one[-1]["eval_loss"]
    assert "runs/seed/stage2/summary.json" in sh(*dvc, "metrics", "show")

    assert "Running stage" not in sh(*dvc, "repro")

    data = copy / "examples/seed-continue-from-checkpoint/data/train_2.jsonl"
    lines = data.read_text().splitlines()
    lines[0] = json.dumps({"messages": [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]})
    data.write_text("\n".join(lines) + "\n")
    third = sh(*dvc, "repro")
    assert [s for s in ("stage1", "stage2") if f"Running stage '{s}'" in third] == ["stage2"]


def test_the_root_pipeline_is_what_emit_dvc_writes_for_the_seed_stages(ftc, tmp_path, monkeypatch):
    """dvc.yaml at the repository root is not written by hand: `--emit dvc` of stage 1, then stage 2, gives it."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "examples" / "seed-continue-from-checkpoint", tmp_path / "examples" / "seed",
                    ignore=shutil.ignore_patterns("output"))  # fmt: skip
    example = tmp_path / "examples" / "seed-continue-from-checkpoint"
    (tmp_path / "examples" / "seed").rename(example)
    shutil.copytree(repo / "examples" / "quickstart" / "model", tmp_path / "examples" / "quickstart" / "model")
    monkeypatch.chdir(tmp_path)
    for stage in ("stage1", "stage2"):
        r = ftc("compile", example / f"{stage}.yaml", "-o", f"runs/seed/{stage}.plan.json", "--emit", "dvc")
        assert r.code == 0, r.err
        assert f"wrote stage {stage} to dvc.yaml" in r.err
    assert not (tmp_path / "runs").exists()  # a stage is written from the spec; DVC compiles it when it runs
    assert (tmp_path / "dvc.yaml").read_text() == (repo / "dvc.yaml").read_text()
    r = ftc("compile", example / "stage1.yaml", "-o", "-", "--emit", "dvc")
    assert r.code == 2
    assert "give -o PLAN" in r.err

    spaced = tmp_path / "my specs; rm -rf x"  # a path is one shell word in the stage's command, whatever it holds
    shutil.copytree(example, spaced)
    r = ftc("compile", spaced / "stage1.yaml", "-o", "p.json", "--emit", "dvc", "--dvc-file", "other.yaml")
    assert r.code == 0, r.err
    import yaml

    stage = yaml.safe_load((tmp_path / "other.yaml").read_text())["stages"]["stage1"]
    assert stage["cmd"].startswith("ftc compile 'my specs; rm -rf x/stage1.yaml' -o p.json && ")


def _validators():
    """Validators for the published schemas vendored in tests/data/schemas (their README says where from)."""
    from pathlib import Path

    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7, DRAFT202012

    folder = Path(__file__).resolve().parents[1] / "data" / "schemas"
    load = lambda name: json.loads((folder / name).read_text(encoding="utf-8"))  # noqa: E731
    cdx = [load(n) for n in ("bom-1.6.schema.json", "spdx.schema.json", "jsf-0.82.schema.json")]
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s, default_specification=DRAFT7)) for s in cdx
    )
    cyclonedx = jsonschema.Draft7Validator(
        cdx[0], registry=registry, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    ol = load("OpenLineage-2-0-2.json")
    registry = Registry().with_resource(ol["$id"], Resource.from_contents(ol, default_specification=DRAFT202012))
    run_event = jsonschema.Draft202012Validator(
        {"$ref": ol["$id"] + "#/$defs/RunEvent"},
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    return cyclonedx, run_event


def test_exports_validate_against_the_published_schemas(two_stages, ftc):
    cyclonedx_schema, run_event_schema = _validators()
    stage1 = read_json(two_stages / "stage1" / "best" / "lineage.json")
    stage2 = read_json(two_stages / "stage2" / "best" / "lineage.json")

    r = ftc("lineage", "export", two_stages / "stage2", "--format", "openlineage")
    assert r.code == 0, r.err
    event = json.loads(r.out)
    run_event_schema.validate(event)
    assert not run_event_schema.is_valid({**event, "producer": "not a uri"})  # formats are really checked
    assert not run_event_schema.is_valid({**event, "eventTime": "yesterday"})
    assert event["eventType"] == "COMPLETE"
    versions = {
        d["name"].rsplit("/", 1)[-1]: d.get("facets", {}).get("version", {}).get("datasetVersion")
        for d in event["inputs"]
    }
    assert (
        versions["half2.jsonl"] == stage2["datasets"][0]["sha256"]
        and stage1["checkpoint"]["digest"] not in versions.values()
    )
    assert event["outputs"][0]["facets"]["version"]["datasetVersion"] == stage2["checkpoint"]["digest"]

    bom = json.loads(ftc("lineage", "export", two_stages / "stage2", "--format", "cyclonedx").out)
    cyclonedx_schema.validate(bom)
    model = bom["components"][0]
    assert (
        model["type"] == "machine-learning-model"
        and model["hashes"][0]["content"] == stage2["checkpoint"]["digest"][7:]
    )
    ancestors = {a["bom-ref"]: a for a in model["pedigree"]["ancestors"]}
    assert stage1["record_id"] in ancestors  # stage 1, with its own pedigree (the base) inside
    assert (
        ancestors[stage1["record_id"]]["pedigree"]["ancestors"][0]["hashes"][0]["content"]
        == stage1["parents"][0]["digest"][7:]
    )
    assert [c["type"] for c in bom["components"][1:]] == ["data", "data"]

    card = ftc("lineage", "export", two_stages / "stage2", "--format", "model-card").out
    front = card.split("---")[1]
    assert "base_model: ftc-tests/tiny-llama" in front and "base_model_relation: adapter" in front
    assert stage2["record_id"] in card


def test_a_run_checks_its_parents_records_even_when_the_plan_was_made_to_match(two_stages, job, ftc):
    """A plan edited (and resealed) to pin a changed parent passes the input check; the parent's own record
    still stops the run before training."""
    from ftc.spec.plan_format import seal_plan
    from ftc.stores.hashing import hash_tree, manifest_digest

    assert _stage3(job, ftc, two_stages).code == 0
    parent = (two_stages / "stage1" / "best").resolve()
    weights = parent / "adapter_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    plan = json.loads((two_stages / "stage3.plan.json").read_text())
    files = hash_tree(parent)
    plan["inputs"]["adapter"].update(digest=manifest_digest(files), files=[f.to_dict() for f in files])
    (two_stages / "stage3.plan.json").write_text(json.dumps(seal_plan(plan)))
    r = ftc("run", two_stages / "stage3.plan.json")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert "the parent checkpoint no longer matches its own lineage record" in r.err
    assert "adapter_model.safetensors: expected sha256:" in r.err
    assert not (two_stages / "stage3").exists()


def test_emit_dvc_refuses_a_pipeline_file_it_cannot_read(ftc, job, tmp_path):
    (tmp_path / "bad.yaml").write_text("stages: [1\n")
    r = ftc("compile", job(), "-o", tmp_path / "p.json", "--emit", "dvc", "--dvc-file", tmp_path / "bad.yaml")
    assert r.code == 2 and "bad.yaml: not YAML" in r.err
    os.mkfifo(tmp_path / "fifo.yaml")
    r = ftc("compile", job(), "-o", tmp_path / "p.json", "--emit", "dvc", "--dvc-file", tmp_path / "fifo.yaml")
    assert r.code == 2 and "is a FIFO (named pipe), not a regular file" in r.err
    r = ftc("compile", job(output_dir="s3://bucket/runs/x/"), "-o", tmp_path / "p.json", "--emit", "dvc")
    assert r.code == 2 and "output_dir s3://bucket/runs/x/ is in a store, but a DVC stage's outputs" in r.err


def test_lineage_diff_of_two_learning_rates_names_exactly_that_key(trained, ftc):
    a = trained("a.json", learning_rate=1e-3, num_epochs=1)
    b = trained("b.json", learning_rate=2e-3, num_epochs=1)
    r = ftc("lineage", "diff", a, b, "--format", "json")
    assert r.code == 0, r.err
    found = json.loads(r.out)
    sections = found["sections"]
    assert sections["settings"] == ["spec.learning_rate: 0.001 -> 0.002"]
    assert sections["inputs"] == [] and sections["environment"] == [] and sections["topology"] == []
    assert any(line.startswith("eval loss at step ") for line in sections["results"])  # what the change did
    assert any(line.startswith("file adapter_model.safetensors: ") for line in sections["results"])

    text = ftc("lineage", "diff", a, b).out
    assert "settings: 1 difference(s)\n  spec.learning_rate: 0.001 -> 0.002" in text
    assert "inputs: the same" in text and "topology: the same" in text
    same = ftc("lineage", "diff", a, a / "best")
    assert same.code == 0 and "the histories are the same" in same.out


def test_lineage_diff_names_the_data_that_changed_by_its_pin(trained, ftc, tmp_path):
    from support.models import arithmetic_examples, write_jsonl

    a = trained("a.json", num_epochs=1)
    write_jsonl(tmp_path / "data" / "other.jsonl", arithmetic_examples(16, seed=9))
    b = trained("b.json", num_epochs=1, train_path="data/other.jsonl")
    sections = json.loads(ftc("lineage", "diff", a, b, "--format", "json").out)["sections"]
    [train] = sections["inputs"]
    assert train.startswith("train: sha256:") and "data/train.jsonl" in train and "data/other.jsonl" in train
    assert sections["settings"] == ['spec.train_path: "data/train.jsonl" -> "data/other.jsonl"']


def test_lineage_diff_of_a_folder_without_a_checkpoint_is_a_usage_error(trained, ftc, tmp_path):
    a = trained("a.json", num_epochs=1)
    (tmp_path / "empty").mkdir()
    r = ftc("lineage", "diff", a, tmp_path / "empty")
    assert r.code == ExitCode.USAGE
    assert "no lineage.json here" in r.err
