"""Checking a folder's signature (``model.sig``, written by ``signing``): whether it covers exactly the files now in the
folder, and whether it verifies with a key the user trusts (``trusted_keys``); and what `ftc lineage verify`, `show`,
reports and model cards say of it. The model-signing library is imported only when a signature is checked with a
trusted key."""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import io
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import LineageBroken
from ftc.spec.reading import MiB, finite_json
from ftc.spec.text import for_terminal
from ftc.stores.hashing import NotAnInput, hash_file
from ftc.stores.scratch import scratch

from ._oms import hashing_config
from .record import LINEAGE_FILE, SIGNATURE_FILE
from .trusted_keys import TrustedKey, trusted_keys_from_env

__all__ = [
    "SIGNATURE_FILE",
    "SignatureState",
    "require_signed",
    "signature_lines",
    "signature_note",
    "signature_state",
]

#: a bundle of a manifest of a few hundred thousand files stays far below this
SIGNATURE_LIMIT = 64 * MiB


@dataclass(frozen=True)
class SignatureState:
    """What a folder's signature says. ``status``:

    - ``unsigned``: no ``model.sig`` (a normal state: nothing was asked to sign it);
    - ``signed``: a signature over exactly these files, verified with a key the user trusts (``trusted``);
    - ``unverified``: a signature over exactly these files, by a key the user did not name as trusted (its
      fingerprint is what the bundle claims: without that public key it cannot be checked), or a keyless Sigstore
      signature (not checked offline);
    - ``broken``: a signature that does not verify: the files changed after signing (a resealed record), the
      cryptographic signature fails, or ``model.sig`` is not a signature at all.
    """

    status: str
    signer: str | None = None  # a key fingerprint, or a Sigstore identity
    reason: str = ""

    @property
    def trusted(self) -> bool:
        return self.status == "signed"

    def describe(self) -> str:
        """One line for people (outside text already escaped)."""
        if self.status == "unsigned":
            return "unsigned"
        if self.status == "signed":
            return f"signed by {self.signer} (a trusted key)"
        if self.status == "unverified":
            return (
                f"signed by {self.signer}, not verified: {self.reason}"
                if self.signer
                else f"not verified: {self.reason}"
            )
        return f"signature broken: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "signer": self.signer, "reason": self.reason, "trusted": self.trusted}


def _read_signature(path: Path, links: bool = False) -> bytes:
    """The bytes of ``model.sig``: a regular file (not a symlink, FIFO or device), bounded. Raises ValueError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if links else os.O_NOFOLLOW))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{SIGNATURE_FILE} is a symlink; a signature is a regular file in the folder") from None
        raise ValueError(f"{SIGNATURE_FILE} cannot be opened ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{SIGNATURE_FILE} is not a regular file")
        if st.st_size > SIGNATURE_LIMIT:
            raise ValueError(f"{SIGNATURE_FILE} is larger than {SIGNATURE_LIMIT // MiB} MiB, more than a signature")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(SIGNATURE_LIMIT + 1)
    finally:
        os.close(fd)
    if len(data) > SIGNATURE_LIMIT:
        raise ValueError(f"{SIGNATURE_FILE} is larger than {SIGNATURE_LIMIT // MiB} MiB, more than a signature")
    return data


def _claims(data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """(the bundle, its manifest: path -> sha256) as written, not yet authenticated. Raises ValueError."""
    try:
        bundle = finite_json(data.decode("utf-8"))
        envelope = bundle["dsseEnvelope"]
        statement = finite_json(base64.b64decode(envelope["payload"], validate=True).decode("utf-8"))
        predicate = statement["predicate"]
        serialization, resources = predicate["serialization"], predicate["resources"]
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"{SIGNATURE_FILE} is not a model-signing bundle") from None
    if not isinstance(bundle, dict) or not isinstance(resources, list) or not isinstance(serialization, dict):
        raise ValueError(f"{SIGNATURE_FILE} is not a model-signing bundle")
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
        raise ValueError(f"{SIGNATURE_FILE} hashes the folder in a way ftc does not sign with (not sha256 per file)")
    if set(serialization.get("ignore_paths") or []) - {SIGNATURE_FILE}:
        raise ValueError(f"{SIGNATURE_FILE} leaves files out of what it signs")
    manifest: dict[str, str] = {}
    for item in resources:
        name, digest = (item.get("name"), item.get("digest")) if isinstance(item, dict) else (None, None)
        if not isinstance(name, str) or not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{SIGNATURE_FILE} is not a model-signing bundle (a resource without a sha256)")
        parts = name.split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name:
            raise ValueError(f"{SIGNATURE_FILE} names a path outside the folder: {for_terminal(name)[:120]!r}")
        if name in manifest:
            raise ValueError(f"{SIGNATURE_FILE} names a file twice: {for_terminal(name)[:120]!r}")
        manifest[name] = digest
    return bundle, manifest


def _claimed_signer(bundle: dict[str, Any]) -> tuple[str, str | None]:
    """("key", fingerprint) or ("sigstore", identity) as the bundle says (not yet checked)."""
    material = bundle.get("verificationMaterial")
    material = material if isinstance(material, dict) else {}
    key = material.get("publicKey")
    if isinstance(key, dict):
        hint = key.get("hint")
        return "key", f"sha256:{hint}" if isinstance(hint, str) and re.fullmatch(r"[0-9a-f]{64}", hint) else None
    return "sigstore", _sigstore_identity(material)


def _sigstore_identity(material: dict[str, Any]) -> str | None:
    """The identity (email or URI) in a Sigstore bundle's signing certificate, as written there."""
    try:
        from cryptography import x509

        cert = material.get("certificate") or (material.get("x509CertificateChain") or {}).get("certificates", [{}])[0]
        parsed = x509.load_der_x509_certificate(base64.b64decode(cert["rawBytes"]))
        names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = names.get_values_for_type(x509.RFC822Name) + names.get_values_for_type(x509.UniformResourceIdentifier)
        return for_terminal(found[0])[:200] if found else None
    except Exception:  # anything unexpected in outside bytes: no identity to show
        return None


def _every_entry(folder: Path, links_ok: bool = False) -> tuple[list[str], list[str]]:
    """(every file under ``folder`` but the signature, hidden ones too, as the library hashes them; every symlink),
    relative with forward slashes. Nothing is read, and no link is followed."""
    files, links = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        rel = os.path.relpath(dirpath, folder)
        for name in sorted(dirnames + filenames):
            path = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
            if os.path.islink(os.path.join(dirpath, name)) and not (links_ok and name in filenames):
                links.append(path)
            elif name in filenames and path != SIGNATURE_FILE:
                files.append(path)
    return files, links


def _files_problems(
    folder: Path, manifest: dict[str, str], digests: Mapping[str, str] | None, links: bool = False
) -> list[str]:
    """What differs between the folder and the signed manifest: names first (an unsigned file is named, never
    hashed), then each signed file's sha256 (from ``digests`` when the caller just verified them)."""
    present, linked = _every_entry(folder, links)
    problems = [f"{p}: a symlink (a signed folder holds regular files only)" for p in linked]
    problems += [f"{p}: not signed (added after signing)" for p in sorted(set(present) - set(manifest))]
    problems += [f"{p}: signed, now missing" for p in sorted(set(manifest) - set(present))]
    if problems:
        return problems
    for path, expected in manifest.items():
        if digests is not None and path in digests:
            found = digests[path]
        else:
            try:
                found, _ = hash_file(folder / path)
            except (OSError, NotAnInput) as exc:
                problems.append(f"{path}: cannot be read ({exc})")
                continue
        if found != expected:
            problems.append(f"{path}: changed after signing")
    return problems


def _library_verifies(folder: Path, signature: bytes, key: TrustedKey, links: bool = False) -> str | None:
    """None when the library verifies the signature with ``key`` over the folder's files; else why not. The bundle
    and the key are handed over as the bytes checked here (copies in a private folder), never re-read from paths
    someone else controls."""
    from model_signing import verifying

    with scratch("sig") as private:
        (private / "key.pem").write_bytes(key.pem)
        (private / SIGNATURE_FILE).write_bytes(signature)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                verifying.Config().use_elliptic_key_verifier(public_key=private / "key.pem").set_hashing_config(
                    hashing_config(links)
                ).verify(folder, private / SIGNATURE_FILE)
        except Exception as exc:  # the library's errors for a signature that does not verify
            text = str(exc) or type(exc).__name__
            if type(exc).__name__ == "InvalidSignature":
                text = "the cryptographic signature does not verify with that key"
            return for_terminal(text)[:300]
    return None


def signature_state(
    folder: Path,
    trusted_keys: Iterable[TrustedKey] = (),
    *,
    digests: Mapping[str, str] | None = None,
    _links: bool = False,
) -> SignatureState:
    """The state of ``folder``'s signature (see :class:`SignatureState`) against ``trusted_keys``.

    The manifest in ``model.sig`` is compared with the folder first, by name (a file not signed is reported without
    being read), then by sha256 (``digests``: path -> sha256 already verified by the caller, e.g. the lineage
    record's files after `ftc lineage verify` re-hashed them). Only then is the signature checked, by the library,
    with the trusted key whose fingerprint the bundle names. (``_links``: ``folder`` is a copy ftc fetched from a
    store, its files links into the content cache, each already checked against its pinned sha256.)"""
    path = folder / SIGNATURE_FILE
    if not path.exists() and not path.is_symlink():
        return SignatureState("unsigned")
    try:
        data = _read_signature(path, _links)
        bundle, manifest = _claims(data)
    except ValueError as exc:
        return SignatureState("broken", None, str(exc))
    kind, signer = _claimed_signer(bundle)
    if LINEAGE_FILE not in manifest and (folder / LINEAGE_FILE).exists():
        return SignatureState("broken", signer, f"{SIGNATURE_FILE} does not cover {LINEAGE_FILE}")
    problems = _files_problems(folder, manifest, digests, _links)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return SignatureState("broken", signer, f"the files are not the ones signed: {for_terminal(shown)}")
    if kind == "sigstore":
        return SignatureState(
            "unverified", signer or "a Sigstore identity", "keyless Sigstore signatures are not checked offline"
        )
    keys = {k.fingerprint: k for k in trusted_keys}
    if signer is None:
        return SignatureState("broken", None, f"{SIGNATURE_FILE} names no key")
    if signer not in keys:
        return SignatureState("unverified", signer, "not a trusted key (--trusted-key, FTC_TRUSTED_KEYS)")
    failure = _library_verifies(folder, data, keys[signer], _links)
    if failure is not None:
        return SignatureState("broken", signer, failure)
    return SignatureState("signed", signer)


def signature_note(folder: Path, record: dict[str, Any]) -> str:
    """The signature state of the checkpoint in ``folder`` (whose record is ``record``) in one line, for readers that
    show a checkpoint without re-hashing it (`ftc lineage show`, a model card): checked against ``FTC_TRUSTED_KEYS``,
    each file taken as the record names it (`ftc lineage verify` re-hashes them)."""
    if not (folder / SIGNATURE_FILE).exists() and not (folder / SIGNATURE_FILE).is_symlink():
        return SignatureState("unsigned").describe()
    digests = {f["path"]: f["sha256"] for f in record["checkpoint"]["files"]}
    try:
        digests[LINEAGE_FILE], _ = hash_file(folder / LINEAGE_FILE)
    except (OSError, NotAnInput):
        pass  # the signature check reads it itself, and says what is wrong
    return signature_state(folder, trusted_keys_from_env(), digests=digests).describe()


def signature_lines(states: Iterable[tuple[str, SignatureState]], *, require: bool) -> list[str]:
    """What `ftc lineage verify` says of each node (name, state) of a chain that verified: signed, unsigned but
    consistent, or broken. Raises :class:`LineageBroken` naming every node whose signature is broken (a folder that
    claims a signature it no longer has, e.g. a record edited and resealed), and with ``require`` every node not
    signed by a trusted key."""
    states = list(states)
    lines = []
    for name, state in states:
        shown = for_terminal(name)
        if state.status == "unsigned":
            lines.append(f"{shown}: unsigned but consistent")
        elif state.status == "broken":
            lines.append(f"{shown}: consistent, but no longer signed: {state.describe()}")
        else:
            lines.append(f"{shown}: {state.describe()}")
    broken = [line for line, (_, state) in zip(lines, states) if state.status == "broken"]
    if broken:
        raise LineageBroken(
            "a signature does not verify: the files are not the ones its signer signed, or it is not a signature\n    "
            + "\n    ".join(broken)
            + "\n    fix: treat the checkpoint as untrusted; get it again from its signer (a record edited and"
            " resealed is consistent, but no longer signed)"
        )
    if require:
        require_signed(states)
    return lines


def require_signed(states: Iterable[tuple[str, SignatureState]]) -> None:
    """For ``--require-signature``: :class:`LineageBroken` naming every node (name, state) not signed by a trusted
    key."""
    bad = [f"{for_terminal(name)}: {state.describe()}" for name, state in states if not state.trusted]
    if bad:
        raise LineageBroken(
            "--require-signature: not signed by a trusted key:\n    "
            + "\n    ".join(bad)
            + "\n    fix: trust the signer's public key (--trusted-key PATH, FTC_TRUSTED_KEYS), or ask for a"
            " checkpoint signed by a key you trust"
        )
