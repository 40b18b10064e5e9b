"""Signed checkpoints and exports: an OpenSSF model-signing (OMS) signature, ``model.sig``, beside the files it covers.

A lineage record proves that a checkpoint is self-consistent, and nothing more: its ids are plain sha256 sums that
anyone can recompute after editing it. A signature adds who: ``model.sig`` is a Sigstore bundle whose signed payload
is a manifest of every file of the folder (``lineage.json`` included) with its sha256, made with the ``model-signing``
library (``pip install 'ftc[sign]'``). It proves that these bytes were signed by the holder of that key; not that the
training was honest, the data clean, or that the key holder is who you think (docs/security.md).

Signing is configured in the environment only, never in a spec or plan:

- ``FTC_SIGNING_KEY=/path/key.pem``: an elliptic-curve private key (P-256, P-384 or P-521, PEM);
  ``FTC_SIGNING_KEY_PASSWORD`` when it is encrypted. Only the public key's fingerprint (``sha256:`` of its PEM, the
  hint the bundle carries) is ever shown or written.
- ``FTC_SIGNING=sigstore``: keyless signing through Sigstore's public instance (an OIDC identity from the
  environment, e.g. a CI's workload identity, or ``FTC_SIGSTORE_IDENTITY_TOKEN``). It needs a network; without one
  it is refused before training starts. (It cannot be tested where these tests run: there is no network there.)

Verifying trusts only keys the user names: PEM public keys from ``--trusted-key`` and from ``FTC_TRUSTED_KEYS``
(paths separated by ``os.pathsep``); each is a ``.pem`` file or a folder whose ``*.pem`` files are read.

The library is imported only when there is something to sign or a signature to check (it costs ~0.5 s).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import io
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.errors import LineageBroken, UsageError
from ftc.spec.reading import MiB, NotReadable, finite_json, read_bounded_text
from ftc.spec.text import for_terminal
from ftc.stores.hashing import NotAnInput, hash_file

from .record import LINEAGE_FILE, SIGNATURE_FILE

__all__ = [
    "KEY_ENV",
    "SIGNATURE_FILE",
    "SIGNING_ENV",
    "TRUSTED_KEYS_ENV",
    "SignatureState",
    "Signer",
    "TrustedKey",
    "load_trusted_keys",
    "require_signed",
    "export_signing_note",
    "signature_lines",
    "signature_note",
    "signature_state",
    "signer_from_env",
    "signing_asked",
    "trusted_keys_from_env",
]

KEY_ENV = "FTC_SIGNING_KEY"
KEY_PASSWORD_ENV = "FTC_SIGNING_KEY_PASSWORD"
SIGNING_ENV = "FTC_SIGNING"
SIGSTORE_TOKEN_ENV = "FTC_SIGSTORE_IDENTITY_TOKEN"
TRUSTED_KEYS_ENV = "FTC_TRUSTED_KEYS"

#: a bundle of a manifest of a few hundred thousand files stays far below this
SIGNATURE_LIMIT = 64 * MiB
#: a PEM key is a few hundred bytes
KEY_LIMIT = 64 * 1024
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing accepts (Sigstore's key types)
_PUBLIC_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PUBLIC KEY-----\s*")


def _hashing_config(links: bool = False) -> Any:
    """How a folder is hashed for its manifest: every file, sha256 (the digest the lineage record names), no symlinks
    (the library refuses them), the signature itself left out. Signing and verifying use this same one (``links``:
    verifying a copy ftc fetched from a store, whose files are links into its verified cache)."""
    from model_signing import hashing

    return (
        hashing.Config()
        .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=links)
        .set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)
        .set_allow_symlinks(links)  # (what hash() applies: use_file_serialization's own flag is overridden)
    )


def _fingerprint(public_key: Any) -> str:
    """``sha256:`` of the key's SubjectPublicKeyInfo PEM: the hint a model-signing bundle carries (and what
    ``sha256sum pub.pem`` prints for a key written by ``openssl ec -pubout``)."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(pem).hexdigest()


# --- signing ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """Signs folders with the key (or Sigstore identity) the environment names. Holds the library's configuration,
    which holds the private key in memory; nothing of it but ``fingerprint`` is ever shown."""

    kind: str  # "key" or "sigstore"
    fingerprint: str | None  # the public key's, for a key
    _config: Any = field(repr=False)  # holds the private key

    def describe(self) -> str:
        return f"key {self.fingerprint}" if self.kind == "key" else "Sigstore (keyless)"

    def sign(self, folder: Path) -> None:
        """Write ``folder/model.sig`` over every file now in ``folder``: hashed first, then the bundle written beside
        them and renamed into place, so a crash leaves no half-written signature under the final name."""
        tmp = folder / f".{SIGNATURE_FILE}.tmp"
        tmp.unlink(missing_ok=True)  # one an interrupted signing left would be hashed among the files
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the library prints notices of its own
                self._config.sign(folder, tmp)
            os.replace(tmp, folder / SIGNATURE_FILE)
        except OSError:
            raise
        except Exception as exc:  # the library's own errors (a symlink in the folder, Sigstore refusing)
            raise UsageError(
                f"{folder}: could not be signed ({for_terminal(str(exc))[:300]})\n"
                f"    fix: sign a folder of regular files only; unset {KEY_ENV} / {SIGNING_ENV} to write unsigned"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)


def _key_problem(why: str) -> UsageError:
    return UsageError(
        f"{KEY_ENV}: the signing key cannot be used: {why}\n"
        f"    fix: point {KEY_ENV} at an elliptic-curve private key in PEM (P-256, P-384 or P-521), e.g. made with "
        f"`openssl ecparam -name prime256v1 -genkey -noout -out key.pem`; or unset it to write unsigned checkpoints"
    )


def _load_private_key(path: str, password: str | None) -> Any:
    """The EC private key in ``path``, checked before the library reads it (which would fail on other key types with
    an AttributeError). Errors name the variable, never the key's bytes."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        text = read_bounded_text(path, limit=KEY_LIMIT, what="private key")
    except NotReadable as exc:
        raise _key_problem(str(exc).removeprefix(f"{path}: ").removeprefix(f"{path} ")) from None
    try:
        key = serialization.load_pem_private_key(text.encode(), password.encode() if password else None)
    except TypeError:
        raise _key_problem(
            f"it is encrypted and {KEY_PASSWORD_ENV} is not set"
            if not password
            else f"it is not encrypted, but {KEY_PASSWORD_ENV} is set"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise _key_problem("not a PEM private key (or the password in " + KEY_PASSWORD_ENV + " is wrong)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise _key_problem(
            f"it is an {type(key).__name__.removeprefix('_').replace('PrivateKey', '')} key, not an EC key"
        )
    if key.curve.name not in _CURVES:
        raise _key_problem(f"curve {key.curve.name}; model-signing accepts {', '.join(_CURVES)}")
    return key


def signing_asked(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for signing (a key, or Sigstore), whether or not it can be done."""
    env = os.environ if env is None else env
    mode = env.get(SIGNING_ENV, "").strip().lower()
    return mode not in ("off", "none") and bool(env.get(KEY_ENV) or mode)


def signer_from_env(env: Mapping[str, str] | None = None) -> Signer | None:
    """The signer the environment configures, checked now (call it before training starts); None: sign nothing.
    Raises :class:`UsageError` for a key that cannot be read or used, or Sigstore asked for where it cannot run."""
    env = os.environ if env is None else env
    path, mode = env.get(KEY_ENV, ""), env.get(SIGNING_ENV, "").strip().lower()
    if mode not in ("", "key", "sigstore", "off", "none"):
        raise UsageError(
            f"{SIGNING_ENV}={for_terminal(mode)[:40]}: unknown signing mode\n"
            f"    fix: {SIGNING_ENV}=sigstore for keyless signing, or set {KEY_ENV} to sign with a key"
        )
    if mode in ("off", "none") or (not path and mode in ("", "key")):
        if mode == "key":
            raise _key_problem(f"{SIGNING_ENV}=key, but {KEY_ENV} is not set")
        return None
    try:
        from model_signing import signing
    except ImportError as exc:
        raise UsageError(
            f"signing was asked for ({KEY_ENV} or {SIGNING_ENV} is set), but the model-signing library cannot be "
            f"imported ({exc})\n    fix: pip install 'ftc[sign]'; or unset {KEY_ENV} / {SIGNING_ENV}"
        ) from None
    config = signing.Config().set_hashing_config(_hashing_config())
    if mode == "sigstore":
        return Signer("sigstore", None, _sigstore_signer(config, env))
    password = env.get(KEY_PASSWORD_ENV) or None
    key = _load_private_key(path, password)
    try:
        # the library hands the password to cryptography as given, which takes bytes (its hint says str)
        config.use_elliptic_key_signer(private_key=path, password=password.encode() if password else None)
    except Exception as exc:  # the file changed since it was checked
        raise _key_problem(type(exc).__name__) from None
    return Signer("key", _fingerprint(key.public_key()), config)


def _sigstore_signer(config: Any, env: Mapping[str, str]) -> Any:
    """Keyless signing: the library's Sigstore signer, with the ambient OIDC identity (or a token from the
    environment); never a browser. Building it fetches Sigstore's trust root, so no network is an error here,
    before training starts. Untested where the tests run (no network there)."""
    try:
        return config.use_sigstore_signer(
            use_ambient_credentials=True, identity_token=env.get(SIGSTORE_TOKEN_ENV) or None, force_oob=True
        )
    except Exception as exc:
        raise UsageError(
            f"{SIGNING_ENV}=sigstore: Sigstore cannot be reached or refused to set up signing "
            f"({type(exc).__name__}: {for_terminal(str(exc))[:200]})\n"
            f"    fix: keyless signing needs a network and an OIDC identity (a CI workload identity, or "
            f"{SIGSTORE_TOKEN_ENV}); offline, sign with a key ({KEY_ENV}) or unset {SIGNING_ENV}"
        ) from None


# --- trust ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    """A public key the user trusts: its fingerprint and its canonical PEM (re-serialized, nothing else)."""

    fingerprint: str
    pem: bytes
    source: str


def _trust_problem(where: str, why: str) -> UsageError:
    return UsageError(
        f"{where}: not a trusted public key: {why}\n"
        "    fix: give the PEM public key of the signer (`openssl ec -in key.pem -pubout -out pub.pem`), one key per "
        "file; a folder's *.pem files are read"
    )


def _read_public_key(path: Path) -> TrustedKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        text = read_bounded_text(path, limit=KEY_LIMIT, what="public key")
    except NotReadable as exc:
        raise _trust_problem(str(path), str(exc)) from None
    if "PRIVATE KEY" in text:
        raise _trust_problem(str(path), "a private key; give its public key, and keep the private key to yourself")
    if _PUBLIC_PEM.fullmatch(text) is None:  # one PEM block and nothing else: no trailing bytes the parser ignores
        raise _trust_problem(str(path), "not exactly one `-----BEGIN PUBLIC KEY-----` block")
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError) as exc:
        raise _trust_problem(str(path), f"it does not parse ({str(exc)[:120]})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _trust_problem(str(path), f"it is an {type(key).__name__.removeprefix('_').replace('PublicKey', '')} key")
    if key.curve.name not in _CURVES:
        raise _trust_problem(str(path), f"curve {key.curve.name}; model-signing accepts {', '.join(_CURVES)}")
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return TrustedKey(_fingerprint(key), pem, str(path))


def load_trusted_keys(paths: Iterable[str | Path]) -> list[TrustedKey]:
    """The public keys in ``paths``: each a PEM file, or a folder whose ``*.pem`` files are each one key (at most
    1,000). A path that cannot be read, or a file that is not one EC public key, is a :class:`UsageError` (exit 2)."""
    found: dict[str, TrustedKey] = {}
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".pem" and not p.name.startswith("."))[:1001]
            if len(files) > 1000:
                raise _trust_problem(str(path), "more than 1,000 .pem files in one folder")
        else:
            files = [path]
        for file in files:
            key = _read_public_key(file)
            found.setdefault(key.fingerprint, key)
    return list(found.values())


def trusted_keys_from_env(env: Mapping[str, str] | None = None) -> list[TrustedKey]:
    """The keys ``FTC_TRUSTED_KEYS`` names (files or folders, separated by ``os.pathsep``)."""
    value = (os.environ if env is None else env).get(TRUSTED_KEYS_ENV, "")
    return load_trusted_keys(p for p in value.split(os.pathsep) if p.strip())


# --- verifying --------------------------------------------------------------------------------------------------


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

    with tempfile.TemporaryDirectory(prefix="ftc-sig-") as scratch:
        (Path(scratch) / "key.pem").write_bytes(key.pem)
        (Path(scratch) / SIGNATURE_FILE).write_bytes(signature)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                verifying.Config().use_elliptic_key_verifier(public_key=Path(scratch) / "key.pem").set_hashing_config(
                    _hashing_config(links)
                ).verify(folder, Path(scratch) / SIGNATURE_FILE)
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


def export_signing_note() -> str:
    """How an export being written now is signed, as the environment configures it (for its model card)."""
    signer = signer_from_env()
    return f"signed in {SIGNATURE_FILE} by {signer.describe()}" if signer is not None else "unsigned"


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
