"""Signing keys for the tests: real elliptic-curve key pairs written as PEM files."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ec_key_pair(folder: Path, name: str, curve: Any = None) -> tuple[Path, Path]:
    """A fresh key pair on ``curve`` (P-256 by default) as ``NAME.pem`` and ``NAME.pub.pem``: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(curve or ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public
