"""The public keys a user trusts to have signed a checkpoint: PEM public keys from ``--trusted-key`` and from
``FTC_TRUSTED_KEYS`` (paths separated by ``os.pathsep``); each is a ``.pem`` file or a folder whose ``*.pem`` files
are read. Verifying a signature (``signature_check``) trusts these keys and no others."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ftc.errors import UsageError
from ftc.spec.reading import NotReadable, read_bounded_text

from ._oms import CURVES, KEY_LIMIT, fingerprint

__all__ = ["TRUSTED_KEYS_ENV", "TrustedKey", "load_trusted_keys", "trusted_keys_from_env"]

TRUSTED_KEYS_ENV = "FTC_TRUSTED_KEYS"
_PUBLIC_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PUBLIC KEY-----\s*")


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
    if key.curve.name not in CURVES:
        raise _trust_problem(str(path), f"curve {key.curve.name}; model-signing accepts {', '.join(CURVES)}")
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return TrustedKey(fingerprint(key), pem, str(path))


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
