"""Signed checkpoints, end to end with real EC keys: a chain trained from the tiny model (stage 1 unsigned, stage 2
continuing it and signed as it is written), then verified against trusted and foreign keys, edited and resealed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ftc.cli import main
from ftc.errors import ExitCode
from ftc.lineage.record import seal
from ftc.spec.canonical import digest_of

from conftest import age
from support.keys import ec_key_pair

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model):
    """Stage 1 (unsigned: no key configured) and stage 2 (continues stage 1's adapter, signed with key ``ours``),
    trained once for the module; tests work on copies (``copied``)."""
    from support.models import arithmetic_examples, write_jsonl

    root = tmp_path_factory.mktemp("signed-chain")
    keys = root / "keys"
    keys.mkdir()
    ours, ours_pub = ec_key_pair(keys, "ours")
    _, theirs_pub = ec_key_pair(keys, "theirs")
    write_jsonl(root / "data" / "train.jsonl", arithmetic_examples(16, seed=1))
    write_jsonl(root / "data" / "valid.jsonl", arithmetic_examples(4, seed=2))
    age(root / "data")
    base = {
        "model_id": "ftc-tests/tiny-llama",
        "initial_base_model_ckpt_path": str(tiny_model),
        "train_path": "data/train.jsonl",
        "valid_path": "data/valid.jsonl",
        "context_length": 64,
    }
    stages = {
        "stage1": {"lora_config": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "stage2": {"initial_adapter_model_ckpt_path": "stage1/best"},
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTC_CACHE_DIR", str(root / "cache"))
        mp.delenv("FTC_SIGNING_KEY", raising=False)
        mp.delenv("FTC_TRUSTED_KEYS", raising=False)
        for name, extra in stages.items():
            if name == "stage2":
                mp.setenv("FTC_SIGNING_KEY", str(ours))
            (root / f"{name}.yaml").write_text(yaml.safe_dump({**base, **extra, "output_dir": name}))
            assert main(["compile", str(root / f"{name}.yaml"), "-o", str(root / f"{name}.plan.json")]) == 0
            assert main(["run", str(root / f"{name}.plan.json")]) == 0
    return {"root": root, "ours": ours, "ours_pub": ours_pub, "theirs_pub": theirs_pub}


@pytest.fixture
def copied(chain, tmp_path):
    """A copy of the trained chain (symlinks kept, relative locations intact) that a test may change."""
    shutil.copytree(chain["root"] / "stage1", tmp_path / "stage1", symlinks=True)
    shutil.copytree(chain["root"] / "stage2", tmp_path / "stage2", symlinks=True)
    return tmp_path


def checkpoint(run: Path) -> Path:
    return (run / "latest").resolve()


def fingerprint(public: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(public.read_bytes()).hexdigest()


def reseal(folder: Path, edit) -> None:
    """Edit the checkpoint's plan.json (through ``edit``) and reseal it as the lineage code seals: the plan's
    plan_id, the record's file list and record_id recomputed, so `ftc lineage verify` finds it consistent."""
    from ftc.lineage.record import checkpoint_section, record_id_of

    plan_path = folder / "plan.json"
    plan = json.loads(plan_path.read_text())
    edit(plan)
    plan["plan_id"] = digest_of({k: v for k, v in plan.items() if k != "plan_id"})
    plan_path.write_text(json.dumps(plan, indent=2, sort_keys=True))
    record = json.loads((folder / "lineage.json").read_text())
    record["checkpoint"] = {**record["checkpoint"], **checkpoint_section(folder)}
    record["plan"]["plan_id"] = plan["plan_id"]
    record = seal({k: v for k, v in record.items() if k != "record_id"})
    assert record["record_id"] == record_id_of(record)
    (folder / "lineage.json").write_text(json.dumps(record, indent=2, sort_keys=True))


def test_a_checkpoint_signed_as_written_verifies_as_signed_by_the_trusted_key(chain, copied, ftc):
    stage2 = checkpoint(copied / "stage2")
    assert (stage2 / "model.sig").is_file()
    record = json.loads((stage2 / "lineage.json").read_text())
    assert "model.sig" not in [f["path"] for f in record["checkpoint"]["files"]]  # written after the record
    assert str(chain["ours"]) not in (stage2 / "lineage.json").read_text()  # nothing of the key in the record
    assert str(chain["ours"]) not in (stage2 / "plan.json").read_text()
    r = ftc("lineage", "verify", copied / "stage2", "--trusted-key", chain["ours_pub"])
    assert r.code == 0, r.err
    assert f"signature: {stage2.name}: signed by {fingerprint(chain['ours_pub'])} (a trusted key)" in r.out
    assert "signature: adapter stage1/best: unsigned but consistent" in r.out
    # every stage 2 checkpoint of the run is signed; stage 1's are not (no key was configured)
    assert all((c / "model.sig").is_file() for c in (copied / "stage2" / "checkpoints").iterdir())
    assert not any((c / "model.sig").exists() for c in (copied / "stage1" / "checkpoints").iterdir())


def test_an_unsigned_checkpoint_is_consistent_and_refused_only_when_a_signature_is_required(chain, copied, ftc):
    r = ftc("lineage", "verify", copied / "stage1", "--trusted-key", chain["ours_pub"])
    assert r.code == 0, r.err
    assert f"signature: {checkpoint(copied / 'stage1').name}: unsigned but consistent" in r.out
    r = ftc("lineage", "verify", copied / "stage1", "--trusted-key", chain["ours_pub"], "--require-signature")
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert "--require-signature: not signed by a trusted key" in r.err
    assert f"{checkpoint(copied / 'stage1').name}: unsigned" in r.err and "fix:" in r.err


def test_a_foreign_signature_is_refused_when_a_signature_is_required(chain, copied, ftc, monkeypatch):
    stage2 = checkpoint(copied / "stage2")
    monkeypatch.setenv("FTC_TRUSTED_KEYS", str(chain["theirs_pub"]))  # the environment's trust, not ours
    r = ftc("lineage", "verify", copied / "stage2")
    assert r.code == 0, r.err  # consistent; signed by a key the user did not name
    assert f"{stage2.name}: signed by {fingerprint(chain['ours_pub'])}, not verified: not a trusted key" in r.out
    r = ftc("lineage", "verify", copied / "stage2", "--require-signature")
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert f"{stage2.name}: signed by {fingerprint(chain['ours_pub'])}, not verified" in r.err


def test_an_unsigned_parent_of_a_signed_checkpoint_is_named_when_a_signature_is_required(chain, copied, ftc):
    r = ftc("lineage", "verify", copied / "stage2", "--trusted-key", chain["ours_pub"], "--require-signature")
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert "adapter stage1/best: unsigned" in r.err
    assert checkpoint(copied / "stage2").name + ":" not in r.err.split("not signed by a trusted key")[1]


def test_an_edited_and_resealed_checkpoint_is_consistent_but_no_longer_signed(chain, copied, ftc):
    stage2 = checkpoint(copied / "stage2")
    reseal(stage2, lambda plan: plan["spec"].__setitem__("learning_rate", 0.5))
    # the lineage itself is consistent again: without a signature, verify would pass
    from ftc.lineage.verify import checkpoint_problems

    assert checkpoint_problems(stage2)[1] == []
    r = ftc("lineage", "verify", copied / "stage2", "--trusted-key", chain["ours_pub"])
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert f"{stage2.name}: consistent, but no longer signed: signature broken" in r.err
    assert "lineage.json: changed after signing" in r.err and "plan.json: changed after signing" in r.err
    # the same without any trusted key: the signature's manifest no longer matches, whoever signed it
    r = ftc("lineage", "verify", copied / "stage2")
    assert r.code == ExitCode.LINEAGE_BROKEN and "no longer signed" in r.err
    # removing the signature makes it unsigned: consistent, and refused when a signature is required
    (stage2 / "model.sig").unlink()
    r = ftc("lineage", "verify", copied / "stage2")
    assert r.code == 0 and f"{stage2.name}: unsigned but consistent" in r.out
    r = ftc("lineage", "verify", copied / "stage2", "--trusted-key", chain["ours_pub"], "--require-signature")
    assert r.code == ExitCode.LINEAGE_BROKEN and f"{stage2.name}: unsigned" in r.err


def test_a_signing_key_that_cannot_be_used_stops_the_run_before_training(chain, copied, ftc, monkeypatch, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    not_ec = tmp_path / "ed25519.pem"
    not_ec.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    spec = yaml.safe_load((chain["root"] / "stage1.yaml").read_text())
    spec.update(output_dir=str(tmp_path / "out"), train_path=str(chain["root"] / "data" / "train.jsonl"))
    spec["valid_path"] = str(chain["root"] / "data" / "valid.jsonl")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    assert ftc("compile", tmp_path / "job.yaml", "-o", tmp_path / "plan.json").code == 0
    for value, message in (
        (str(not_ec), "it is an Ed25519 key, not an EC key"),
        (str(tmp_path / "missing.pem"), "no such private key file"),
    ):
        monkeypatch.setenv("FTC_SIGNING_KEY", value)
        r = ftc("run", tmp_path / "plan.json")
        assert r.code == ExitCode.USAGE, r.err
        assert f"FTC_SIGNING_KEY: the signing key cannot be used: {message}" in r.err and "fix:" in r.err
        assert value not in r.err  # the key's path is not logged
        assert not list((tmp_path / "out").glob("checkpoints/step-*"))


def test_verify_names_a_huge_file_not_in_the_record_without_hashing_it(chain, copied, ftc):
    import time

    stage2 = checkpoint(copied / "stage2")
    with open(stage2 / "planted.bin", "wb") as f:
        f.truncate(6 << 30)  # 6 GiB, sparse: hashing it would take far longer than the limit below
    (stage2 / "ftc_state.json").unlink()  # said in the same message: every problem at once
    started = time.monotonic()
    r = ftc("lineage", "verify", copied / "stage2", "--trusted-key", chain["ours_pub"])
    assert time.monotonic() - started < 20
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert f"{stage2}/planted.bin: not in the lineage record (not hashed)" in r.err
    assert f"{stage2}/ftc_state.json: missing" in r.err


def test_a_signed_checkpoint_resumes_and_is_a_parent_like_any_other(chain, copied, ftc):
    # the signature beside the files is neither a file of the record nor a stranger to verify, in a parent too
    stage2 = checkpoint(copied / "stage2")
    record = json.loads((stage2 / "lineage.json").read_text())
    from ftc.lineage.verify import verified_record

    assert verified_record(stage2, "cannot", "fix")["record_id"] == record["record_id"]
    # stage 3 continues the signed stage 2, unsigned itself: verify walks through the signed parent
    spec = yaml.safe_load((chain["root"] / "stage2.yaml").read_text())
    spec.update(output_dir="stage3", initial_adapter_model_ckpt_path="stage2/best")
    spec.update({k: str(chain["root"] / spec[k]) for k in ("train_path", "valid_path")})
    (copied / "stage3.yaml").write_text(yaml.safe_dump(spec))
    assert ftc("compile", copied / "stage3.yaml", "-o", copied / "stage3.plan.json").code == 0
    r = ftc("run", copied / "stage3.plan.json")
    assert r.code == 0, r.err
    r = ftc("lineage", "verify", copied / "stage3", "--trusted-key", chain["ours_pub"], "--require-signature")
    assert r.code == ExitCode.LINEAGE_BROKEN
    message = r.err.split("not signed by a trusted key")[1]
    assert f"{checkpoint(copied / 'stage3').name}: unsigned" in message
    assert "adapter-continued" not in message and "stage2/best" not in message  # the signed parent passes
    assert "adapter stage1/best: unsigned" in message  # and its own unsigned parent is named


def test_an_export_is_signed_as_written_and_its_chain_verifies(chain, copied, ftc, monkeypatch):
    monkeypatch.setenv("FTC_SIGNING_KEY", str(chain["ours"]))
    r = ftc("export", copied / "stage2", "-o", copied / "export")
    assert r.code == 0, r.err
    assert (copied / "export" / "model.sig").is_file()
    monkeypatch.delenv("FTC_SIGNING_KEY")
    r = ftc("lineage", "verify", copied / "export", "--trusted-key", chain["ours_pub"])
    assert r.code == 0, r.err
    ours = fingerprint(chain["ours_pub"])
    assert f"signature: export: signed by {ours} (a trusted key)" in r.out
    assert f"signature: checkpoint {copied / 'stage2'}: signed by {ours} (a trusted key)" in r.out
    assert "signature: adapter stage1/best: unsigned but consistent" in r.out
    # a key that cannot be used is refused before the merge: no export folder appears
    monkeypatch.setenv("FTC_SIGNING_KEY", str(copied / "no-such-key.pem"))
    r = ftc("export", copied / "stage2", "-o", copied / "export2")
    assert r.code == ExitCode.USAGE and "FTC_SIGNING_KEY: the signing key cannot be used" in r.err
    assert not (copied / "export2").exists()


def test_show_report_and_the_model_card_tell_signed_from_no_longer_signed(chain, copied, ftc, monkeypatch):
    stage2 = checkpoint(copied / "stage2")
    ours = fingerprint(chain["ours_pub"])
    monkeypatch.setenv("FTC_TRUSTED_KEYS", str(chain["ours_pub"]))
    r = ftc("lineage", "show", copied / "stage2")
    assert r.code == 0 and r.out.splitlines()[-1] == f"signature: signed by {ours} (a trusted key)"
    assert "signature:" not in ftc("lineage", "show", copied / "stage1").out  # unsigned: nothing to say
    r = ftc("report", copied / "stage2", "-o", copied / "report.html")
    assert r.code == 0, r.err
    page = (copied / "report.html").read_text()
    assert f"signature of {stage2.name}: signed by {ours} (a trusted key)" in page
    assert "signature of adapter stage1/best: unsigned" in page
    monkeypatch.setenv("FTC_SIGNING_KEY", str(chain["ours"]))
    assert ftc("export", copied / "stage2", "-o", copied / "export").code == 0
    card = (copied / "export" / "README.md").read_text().replace("\\", "")  # as Markdown renders it
    assert (
        f"Signatures: the checkpoint is signed by {ours} (a trusted key); this export is signed in model.sig by" in card
    )
    # edited and resealed: consistent, but each reader says the signature is broken
    reseal(stage2, lambda plan: plan["spec"].__setitem__("learning_rate", 0.5))
    r = ftc("lineage", "show", copied / "stage2")
    assert r.out.splitlines()[-1].startswith("signature: signature broken: the files are not the ones signed")
    r = ftc("report", copied / "stage2", "-o", copied / "report2.html")
    assert f"signature of {stage2.name}: signature broken" in (copied / "report2.html").read_text()


def test_a_checkpoint_signed_after_the_fact_completes_a_chain_that_require_signature_accepts(
    chain, copied, ftc, monkeypatch
):
    stage1 = checkpoint(copied / "stage1")
    r = ftc("lineage", "sign", copied / "stage1")
    assert r.code == ExitCode.USAGE and "no signing key: set FTC_SIGNING_KEY" in r.err
    monkeypatch.setenv("FTC_SIGNING_KEY", str(chain["ours"]))
    (stage1 / "plan.json").write_text("{}")  # not what its record says: not signed
    r = ftc("lineage", "sign", copied / "stage1")
    assert r.code == ExitCode.LINEAGE_BROKEN and "will not be signed" in r.err and "plan.json" in r.err
    assert not (stage1 / "model.sig").exists()
    shutil.copy(chain["root"] / "stage1" / "latest" / "plan.json", stage1 / "plan.json")
    r = ftc("lineage", "sign", copied / "stage1")
    assert r.code == 0, r.err
    assert f"signed {stage1} with key {fingerprint(chain['ours_pub'])}" in r.out
    r = ftc("lineage", "sign", copied / "stage1")
    assert r.code == ExitCode.USAGE and "already signed (model.sig)" in r.err
    monkeypatch.delenv("FTC_SIGNING_KEY")
    r = ftc("lineage", "verify", copied / "stage2", "--trusted-key", chain["ours_pub"], "--require-signature")
    assert r.code == 0, r.err
    assert r.out.count("(a trusted key)") == 2 and "unsigned" not in r.out


def test_a_signed_checkpoint_published_to_a_store_keeps_its_signature(s3, chain, job, ftc, tmp_path, monkeypatch):
    from ftc.lineage.record import SIGNATURE_FILE
    from ftc.stores.publish import SIGNATURE_FILE as PUBLISHED

    assert PUBLISHED == SIGNATURE_FILE  # one name, said in two parts that may not import each other
    prefix = f"s3://{s3.bucket}/runs/signed/"
    monkeypatch.setenv("FTC_SIGNING_KEY", str(chain["ours"]))
    assert ftc("compile", job(output_dir=prefix), "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == 0, r.err
    monkeypatch.delenv("FTC_SIGNING_KEY")
    step = f"{prefix}checkpoints/step-000004/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket, Prefix="runs/signed/").get("Contents", [])]
    assert "runs/signed/checkpoints/step-000004/model.sig" in keys
    r = ftc("lineage", "verify", step, "--trusted-key", chain["ours_pub"], "--require-signature")
    assert r.code == 0, r.err
    assert f"signed by {fingerprint(chain['ours_pub'])} (a trusted key)" in r.out
    # a stage continuing it from the store: the parent fetched by its pins carries its signature
    r = ftc("compile", job(name="next.yaml", lora_config=None, initial_adapter_model_ckpt_path=step,
                           output_dir="next"), "-o", tmp_path / "next.plan.json")  # fmt: skip
    assert r.code == 0, r.err
    assert ftc("run", tmp_path / "next.plan.json").code == 0
    r = ftc("lineage", "verify", tmp_path / "next", "--trusted-key", chain["ours_pub"])
    assert r.code == 0, r.err
    assert f"signature: adapter {step}: signed by {fingerprint(chain['ours_pub'])} (a trusted key)" in r.out
