"""The settings of the model-signing library that ftc signs and checks with, in one place so that both sides agree:
how a folder is hashed for its manifest, which key types are accepted, and how a public key is named."""

from __future__ import annotations

import hashlib
from typing import Any

from .record import SIGNATURE_FILE

#: a PEM key is a few hundred bytes
KEY_LIMIT = 64 * 1024
CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing accepts (Sigstore's key types)


def hashing_config(links: bool = False) -> Any:
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


def fingerprint(public_key: Any) -> str:
    """``sha256:`` of the key's SubjectPublicKeyInfo PEM: the hint a model-signing bundle carries (and what
    ``sha256sum pub.pem`` prints for a key written by ``openssl ec -pubout``)."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(pem).hexdigest()
