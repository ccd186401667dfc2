"""Real OpenSSH public keys for tests, made with cryptography."""

from __future__ import annotations

import warnings

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa


def _openssh(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def ed25519_pub(comment: str = "me@laptop") -> str:
    return f"{_openssh(ed25519.Ed25519PrivateKey.generate())} {comment}".strip()


def rsa_pub(bits: int = 2048, comment: str = "") -> str:
    return f"{_openssh(rsa.generate_private_key(public_exponent=65537, key_size=bits))} {comment}".strip()


def ecdsa_pub() -> str:
    return _openssh(ec.generate_private_key(ec.SECP256R1()))


def dsa_pub() -> str:
    # cryptography warns that its DSA support is going away; the key is still real.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _openssh(dsa.generate_private_key(key_size=1024))  # noqa: S505 (must be refused)
