"""Signing checkpoints and exports: an OpenSSF model-signing (OMS) signature, ``model.sig``, beside the files it covers.

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

The library is imported only when there is something to sign (it costs ~0.5 s). Checking a signature is
``signature_check``'s job, against the keys ``trusted_keys`` reads.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.errors import UsageError
from ftc.spec.reading import NotReadable, read_bounded_text
from ftc.spec.text import for_terminal

from ._oms import CURVES, KEY_LIMIT, fingerprint, hashing_config
from .record import SIGNATURE_FILE

__all__ = [
    "KEY_ENV",
    "SIGNATURE_FILE",
    "SIGNING_ENV",
    "Signer",
    "export_signing_note",
    "signer_from_env",
    "signing_asked",
]

KEY_ENV = "FTC_SIGNING_KEY"
KEY_PASSWORD_ENV = "FTC_SIGNING_KEY_PASSWORD"
SIGNING_ENV = "FTC_SIGNING"
SIGSTORE_TOKEN_ENV = "FTC_SIGSTORE_IDENTITY_TOKEN"


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
    if key.curve.name not in CURVES:
        raise _key_problem(f"curve {key.curve.name}; model-signing accepts {', '.join(CURVES)}")
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
    config = signing.Config().set_hashing_config(hashing_config())
    if mode == "sigstore":
        return Signer("sigstore", None, _sigstore_signer(config, env))
    password = env.get(KEY_PASSWORD_ENV) or None
    key = _load_private_key(path, password)
    try:
        # the library hands the password to cryptography as given, which takes bytes (its hint says str)
        config.use_elliptic_key_signer(private_key=path, password=password.encode() if password else None)
    except Exception as exc:  # the file changed since it was checked
        raise _key_problem(type(exc).__name__) from None
    return Signer("key", fingerprint(key.public_key()), config)


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


def export_signing_note() -> str:
    """How an export being written now is signed, as the environment configures it (for its model card)."""
    signer = signer_from_env()
    return f"signed in {SIGNATURE_FILE} by {signer.describe()}" if signer is not None else "unsigned"
