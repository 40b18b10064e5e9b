"""Signatures against hostile folders, keys and bundles: real EC keys, real model-signing bundles, real FIFOs,
symlinks and sparse files. Every case ends in a clear state or error, quickly, without reading what it must not."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ftc.errors import ExitCode, UsageError
from ftc.lineage.signature_check import SIGNATURE_FILE, signature_lines, signature_state
from ftc.lineage.signing import signer_from_env
from ftc.lineage.trusted_keys import load_trusted_keys

from support.keys import ec_key_pair


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    ours, ours_pub = ec_key_pair(folder, "ours")
    theirs, theirs_pub = ec_key_pair(folder, "theirs")
    return {"ours": ours, "ours_pub": ours_pub, "theirs": theirs, "theirs_pub": theirs_pub}


def _folder(root: Path, name: str = "ckpt", weights: bytes = b"weights") -> Path:
    folder = root / name
    (folder / "sub").mkdir(parents=True)
    (folder / "lineage.json").write_text('{"record_id": "x"}')
    (folder / "plan.json").write_text("{}")
    (folder / "sub" / "model.safetensors").write_bytes(weights)
    return folder


def _sign(folder: Path, key: Path) -> None:
    signer = signer_from_env({"FTC_SIGNING_KEY": str(key)})
    assert signer is not None
    signer.sign(folder)


def _fingerprint(public: Path) -> str:
    return "sha256:" + hashlib.sha256(public.read_bytes()).hexdigest()


def _bundle(folder: Path) -> dict:
    return json.loads((folder / SIGNATURE_FILE).read_text())


def _payload(bundle: dict) -> dict:
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def _with_payload(bundle: dict, payload: dict) -> dict:
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return bundle


@pytest.fixture
def signed(tmp_path, keys):
    folder = _folder(tmp_path)
    _sign(folder, keys["ours"])
    return folder


def test_a_signed_folder_is_signed_by_the_trusted_key_and_unverified_without_it(signed, keys):
    trusted = load_trusted_keys([keys["ours_pub"]])
    state = signature_state(signed, trusted)
    assert state.status == "signed" and state.trusted
    assert state.describe() == f"signed by {_fingerprint(keys['ours_pub'])} (a trusted key)"
    state = signature_state(signed, load_trusted_keys([keys["theirs_pub"]]))
    assert state.status == "unverified" and not state.trusted
    assert state.describe().startswith(f"signed by {_fingerprint(keys['ours_pub'])}, not verified: not a trusted key")
    # the signature is not among the files it signs, and a crash leaves no temporary file behind
    assert SIGNATURE_FILE not in [r["name"] for r in _payload(_bundle(signed))["predicate"]["resources"]]
    assert sorted(p.name for p in signed.iterdir()) == ["lineage.json", "model.sig", "plan.json", "sub"]


def test_the_fingerprint_is_what_sha256sum_prints_for_an_openssl_public_key(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    (tmp_path / "trusted").mkdir()
    key, pub = tmp_path / "key.pem", tmp_path / "trusted" / "pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], check=True)
    subprocess.run(["openssl", "ec", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True)
    folder = _folder(tmp_path)
    signer = signer_from_env({"FTC_SIGNING_KEY": str(key)})
    assert signer.fingerprint == _fingerprint(pub)
    signer.sign(folder)
    assert signature_state(folder, load_trusted_keys([tmp_path / "trusted"])).status == "signed"  # a folder of keys


# --- hostile signature files -------------------------------------------------------------------------------------


def test_a_fifo_as_the_signature_is_broken_without_blocking(tmp_path, keys):
    folder = _folder(tmp_path)
    os.mkfifo(folder / SIGNATURE_FILE)
    started = time.monotonic()
    state = signature_state(folder, load_trusted_keys([keys["ours_pub"]]))
    assert time.monotonic() - started < 5
    assert state.status == "broken" and "model.sig is not a regular file" in state.reason


def test_a_symlink_to_a_valid_signature_is_broken(tmp_path, signed, keys):
    elsewhere = tmp_path / "elsewhere.sig"
    (signed / SIGNATURE_FILE).rename(elsewhere)
    (signed / SIGNATURE_FILE).symlink_to(elsewhere)
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and "model.sig is a symlink" in state.reason


def test_a_huge_signature_is_refused_by_its_size_without_reading_it(tmp_path, keys):
    folder = _folder(tmp_path)
    with open(folder / SIGNATURE_FILE, "wb") as f:
        f.truncate(3 << 30)  # 3 GiB, sparse
    started = time.monotonic()
    state = signature_state(folder, load_trusted_keys([keys["ours_pub"]]))
    assert time.monotonic() - started < 5
    assert state.status == "broken" and "larger than 64 MiB" in state.reason


@pytest.mark.parametrize(
    "text",
    [
        "not json at all",
        "[" * 100_000,  # deeper than the parser goes
        '{"dsseEnvelope": {"payload": "!!!not base64"}}',
        json.dumps({"dsseEnvelope": {"payload": base64.b64encode(b'{"predicate": 1}').decode()}}),
        '{"dsseEnvelope": {"payload": "' + base64.b64encode(b'{"x": NaN}').decode() + '"}}',
        "\udcff",  # not UTF-8 once written with surrogateescape
    ],
    ids=["not-json", "deep", "bad-base64", "no-resources", "nan", "not-utf8"],
)
def test_a_signature_that_is_not_a_bundle_is_broken_not_a_crash(tmp_path, keys, text):
    folder = _folder(tmp_path)
    (folder / SIGNATURE_FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    state = signature_state(folder, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and state.reason == "model.sig is not a model-signing bundle"


def test_a_signature_over_another_folder_copied_in_is_broken(tmp_path, keys):
    other = _folder(tmp_path, "other", weights=b"other weights")
    _sign(other, keys["ours"])  # a genuine signature by the trusted key, over other bytes
    folder = _folder(tmp_path)
    shutil.copy(other / SIGNATURE_FILE, folder / SIGNATURE_FILE)
    state = signature_state(folder, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and "sub/model.safetensors: changed after signing" in state.reason


def test_a_file_added_after_signing_is_named_and_a_huge_one_is_not_read(signed, keys):
    with open(signed / "sub" / "extra.bin", "wb") as f:
        f.truncate(4 << 30)  # 4 GiB, sparse: hashing it would take many seconds
    started = time.monotonic()
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert time.monotonic() - started < 5
    assert state.status == "broken" and "sub/extra.bin: not signed (added after signing)" in state.reason


def test_a_hidden_file_added_after_signing_is_named(signed, keys):
    (signed / ".hidden").write_text("x")  # the lineage walk skips dot files; the signature covers them
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and ".hidden: not signed (added after signing)" in state.reason


def test_a_file_removed_after_signing_is_named(signed, keys):
    (signed / "plan.json").unlink()
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and "plan.json: signed, now missing" in state.reason


def test_a_signed_file_replaced_by_a_symlink_or_a_fifo_is_broken_without_blocking(signed, keys, tmp_path):
    target = tmp_path / "same.json"
    target.write_text("{}")  # the same bytes, now behind a link
    (signed / "plan.json").unlink()
    (signed / "plan.json").symlink_to(target)
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and "plan.json: a symlink" in state.reason
    (signed / "plan.json").unlink()
    os.mkfifo(signed / "plan.json")
    started = time.monotonic()
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert time.monotonic() - started < 5
    assert state.status == "broken" and "plan.json: cannot be read" in state.reason


def test_a_manifest_naming_a_path_outside_the_folder_is_refused_before_anything_is_read(tmp_path, signed, keys):
    os.mkfifo(tmp_path / "outside")  # reading it would block
    bundle = _bundle(signed)
    payload = _payload(bundle)
    payload["predicate"]["resources"].append({"name": "../outside", "digest": "0" * 64, "algorithm": "sha256"})
    (signed / SIGNATURE_FILE).write_text(json.dumps(_with_payload(bundle, payload)))
    started = time.monotonic()
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert time.monotonic() - started < 5
    assert state.status == "broken" and "names a path outside the folder: '../outside'" in state.reason


def test_a_manifest_that_leaves_the_record_out_is_broken(tmp_path, keys):
    from model_signing import hashing, signing

    folder = _folder(tmp_path)
    config = hashing.Config().use_file_serialization(hashing_algorithm="sha256")
    config.set_ignored_paths(paths=[SIGNATURE_FILE, "lineage.json"], ignore_git_paths=False)
    signing.Config().use_elliptic_key_signer(private_key=keys["ours"]).set_hashing_config(config).sign(
        folder, folder / SIGNATURE_FILE
    )  # a genuine signature by the trusted key that does not cover the record: the record could be swapped
    state = signature_state(folder, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and "model.sig leaves files out of what it signs" in state.reason


def test_a_signature_by_another_key_claiming_the_trusted_fingerprint_does_not_verify(signed, keys, tmp_path):
    forged = _folder(tmp_path, "forged")
    _sign(forged, keys["theirs"])
    bundle = _bundle(forged)
    bundle["verificationMaterial"]["publicKey"]["hint"] = _fingerprint(keys["ours_pub"]).removeprefix("sha256:")
    (forged / SIGNATURE_FILE).write_text(json.dumps(bundle))
    state = signature_state(forged, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and state.signer == _fingerprint(keys["ours_pub"])


def test_a_payload_edited_to_match_edited_files_fails_the_cryptographic_check(signed, keys):
    (signed / "plan.json").write_text('{"learning_rate": 0.5}')
    bundle = _bundle(signed)
    payload = _payload(bundle)
    for item in payload["predicate"]["resources"]:
        if item["name"] == "plan.json":
            item["digest"] = hashlib.sha256(b'{"learning_rate": 0.5}').hexdigest()
    (signed / SIGNATURE_FILE).write_text(json.dumps(_with_payload(bundle, payload)))
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and state.signer == _fingerprint(keys["ours_pub"])
    with pytest.raises(Exception) as caught:
        signature_lines([("ckpt", state)], require=False)
    assert caught.value.exit_code == ExitCode.LINEAGE_BROKEN and "ckpt: consistent, but no longer signed" in str(
        caught.value
    )


def test_control_characters_in_a_manifest_path_are_shown_escaped(signed, keys):
    bundle = _bundle(signed)
    payload = _payload(bundle)
    payload["predicate"]["resources"].append({"name": "x\x1b[2J\rverified", "digest": "0" * 64})
    (signed / SIGNATURE_FILE).write_text(json.dumps(_with_payload(bundle, payload)))
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and "\x1b" not in state.describe() and "\r" not in state.describe()
    assert "x\\x1b[2J\\rverified: signed, now missing" in state.reason


# --- hostile keys and settings -----------------------------------------------------------------------------------


def _problem(env: dict) -> UsageError:
    with pytest.raises(UsageError) as caught:
        signer_from_env(env)
    assert caught.value.exit_code == ExitCode.USAGE and "fix:" in str(caught.value)
    return caught.value


def test_a_signing_key_that_is_not_ec_is_a_clear_error(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = tmp_path / "rsa.pem"
    key.write_bytes(
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    error = _problem({"FTC_SIGNING_KEY": str(key)})
    assert "FTC_SIGNING_KEY: the signing key cannot be used: it is an RSA key, not an EC key" in str(error)
    assert "BEGIN" not in str(error)


def test_a_signing_key_on_an_unsupported_curve_is_a_clear_error(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    private, _ = ec_key_pair(tmp_path, "k1", ec.SECP256K1())
    assert "curve secp256k1; model-signing accepts" in str(_problem({"FTC_SIGNING_KEY": str(private)}))


def test_a_signing_key_that_is_a_fifo_or_garbage_or_encrypted_is_a_clear_error(tmp_path, keys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    os.mkfifo(tmp_path / "fifo.pem")
    assert "a FIFO (named pipe)" in str(_problem({"FTC_SIGNING_KEY": str(tmp_path / "fifo.pem")}))
    (tmp_path / "garbage.pem").write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    assert "not a PEM private key" in str(_problem({"FTC_SIGNING_KEY": str(tmp_path / "garbage.pem")}))
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret-password"),
        )
    )
    assert "encrypted and FTC_SIGNING_KEY_PASSWORD is not set" in str(_problem({"FTC_SIGNING_KEY": str(locked)}))
    wrong = _problem({"FTC_SIGNING_KEY": str(locked), "FTC_SIGNING_KEY_PASSWORD": "wrong"})
    assert "wrong" not in str(wrong).replace("is wrong", "")  # the password is never shown
    ok = signer_from_env({"FTC_SIGNING_KEY": str(locked), "FTC_SIGNING_KEY_PASSWORD": "secret-password"})
    assert ok is not None and ok.fingerprint.startswith("sha256:")


def test_no_key_signs_nothing_and_an_unknown_mode_is_refused():
    assert signer_from_env({}) is None
    assert signer_from_env({"FTC_SIGNING": "off", "FTC_SIGNING_KEY": "/nonexistent"}) is None
    assert "unknown signing mode" in str(_problem({"FTC_SIGNING": "yes-please"}))
    assert "FTC_SIGNING=key, but FTC_SIGNING_KEY is not set" in str(_problem({"FTC_SIGNING": "key"}))


def _trust_problem(paths) -> str:
    with pytest.raises(UsageError) as caught:
        load_trusted_keys(paths)
    assert caught.value.exit_code == ExitCode.USAGE and "fix:" in str(caught.value)
    return str(caught.value)


def test_a_trusted_public_key_with_trailing_garbage_is_refused(tmp_path, keys):
    padded = tmp_path / "padded.pem"
    padded.write_text(keys["ours_pub"].read_text() + "-----BEGIN PUBLIC KEY-----\ntrailing\n")
    assert "not exactly one `-----BEGIN PUBLIC KEY-----` block" in _trust_problem([padded])
    prefixed = tmp_path / "prefixed.pem"
    prefixed.write_text("extra words\n" + keys["ours_pub"].read_text())
    assert "not exactly one" in _trust_problem([prefixed])


def test_a_private_key_given_as_trusted_is_refused_without_echoing_it(keys):
    message = _trust_problem([keys["ours"]])
    assert "a private key; give its public key" in message and "BEGIN" not in message


def test_a_trusted_key_that_is_missing_a_fifo_or_not_ec_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    assert "no such public key file" in _trust_problem([tmp_path / "missing.pem"])
    os.mkfifo(tmp_path / "fifo.pem")
    assert "a FIFO (named pipe)" in _trust_problem([tmp_path / "fifo.pem"])
    (tmp_path / "ed.pem").write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert "it is an Ed25519 key" in _trust_problem([tmp_path / "ed.pem"])


def test_verify_refuses_an_unreadable_trusted_key_before_anything_else(ftc, tmp_path):
    r = ftc("lineage", "verify", tmp_path, "--trusted-key", tmp_path / "missing.pem")
    assert r.code == ExitCode.USAGE and "missing.pem: not a trusted public key: " in r.err


def test_require_signature_names_every_node_not_signed_by_a_trusted_key(signed, keys, tmp_path):
    unsigned = _folder(tmp_path, "unsigned")
    states = [
        ("ckpt", signature_state(signed, load_trusted_keys([keys["ours_pub"]]))),
        ("adapter stage1/best", signature_state(unsigned, [])),
        ("base", signature_state(signed, [])),
    ]
    assert signature_lines(states, require=False) == [
        f"ckpt: signed by {_fingerprint(keys['ours_pub'])} (a trusted key)",
        "adapter stage1/best: unsigned but consistent",
        f"base: signed by {_fingerprint(keys['ours_pub'])}, not verified: not a trusted key (--trusted-key,"
        " FTC_TRUSTED_KEYS)",
    ]
    with pytest.raises(Exception) as caught:
        signature_lines(states, require=True)
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.LINEAGE_BROKEN
    assert "adapter stage1/best: unsigned" in message and "base: signed by" in message
    assert "ckpt:" not in message


def test_signing_is_asked_for_by_a_key_or_a_mode_and_off_turns_it_off():
    from ftc.lineage.signing import signing_asked

    assert not signing_asked({}) and not signing_asked({"FTC_SIGNING": "off", "FTC_SIGNING_KEY": "/k.pem"})
    assert signing_asked({"FTC_SIGNING_KEY": "/k.pem"}) and signing_asked({"FTC_SIGNING": "sigstore"})


def test_keyless_sigstore_without_a_network_is_a_clear_error_before_anything_is_signed(monkeypatch, tmp_path):
    # where the tests run there is no network: Sigstore's trust root cannot be fetched, and that is said up front.
    # (Where a network exists, the signer is built; signing itself then needs an OIDC identity, untested here.)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    try:
        signer = signer_from_env({"FTC_SIGNING": "sigstore"})
    except UsageError as exc:
        assert exc.exit_code == ExitCode.USAGE
        assert str(exc).startswith("FTC_SIGNING=sigstore: Sigstore cannot be reached or refused to set up signing")
        assert "keyless signing needs a network" in str(exc)
    else:
        assert signer is not None and signer.kind == "sigstore" and signer.fingerprint is None


def test_a_keyless_sigstore_signature_shows_its_identity_but_is_not_trusted_offline(signed, keys):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sigstore")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(minutes=10))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("alice@example.com\x1b[2J")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    bundle = _bundle(signed)
    raw = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    bundle["verificationMaterial"] = {"certificate": {"rawBytes": raw}, "tlogEntries": []}
    (signed / SIGNATURE_FILE).write_text(json.dumps(bundle))
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "unverified" and not state.trusted
    assert state.describe() == (
        "signed by alice@example.com\\x1b[2J, not verified: keyless Sigstore signatures are not checked offline"
    )


def test_a_temporary_signature_left_by_an_interrupted_signing_is_not_signed_as_a_file(tmp_path, keys):
    folder = _folder(tmp_path)
    (folder / ".model.sig.tmp").write_text("half a bundle")
    _sign(folder, keys["ours"])
    assert not (folder / ".model.sig.tmp").exists()
    assert signature_state(folder, load_trusted_keys([keys["ours_pub"]])).status == "signed"


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("/etc/passwd", "names a path outside the folder: '/etc/passwd'"),
        ("sub/../../x", "names a path outside the folder: 'sub/../../x'"),
        ("./plan.json", "names a path outside the folder: './plan.json'"),
        ("sub//model.safetensors", "names a path outside the folder"),
        ("sub\\..\\..\\x", "names a path outside the folder"),
        ("plan.json", "names a file twice: 'plan.json'"),
    ],
)
def test_a_manifest_path_that_is_absolute_climbs_or_repeats_is_refused(signed, keys, name, said):
    bundle = _bundle(signed)
    payload = _payload(bundle)
    payload["predicate"]["resources"].append({"name": name, "digest": "0" * 64, "algorithm": "sha256"})
    (signed / SIGNATURE_FILE).write_text(json.dumps(_with_payload(bundle, payload)))
    state = signature_state(signed, load_trusted_keys([keys["ours_pub"]]))
    assert state.status == "broken" and said in state.reason
