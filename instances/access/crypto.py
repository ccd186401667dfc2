"""Encryption at rest of instance credentials (Fernet, key from the environment)."""

from __future__ import annotations

import base64
import functools
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    return _fernet_for(settings.GPUCLOUD_ENCRYPTION_KEY, settings.SECRET_KEY)


@functools.lru_cache(maxsize=4)
def _fernet_for(key: str, secret_key: str) -> Fernet:
    # Cached per key: the list endpoint opens two credentials per instance.
    if not key:
        # DEBUG only (settings refuse production without a key): derive from SECRET_KEY.
        key = base64.urlsafe_b64encode(
            hashlib.sha256(("gpucloud-credentials:" + secret_key).encode()).digest()
        ).decode()
    return Fernet(key.encode() if isinstance(key, str) else key)


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode() if plain else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    return _decrypt(token, settings.GPUCLOUD_ENCRYPTION_KEY, settings.SECRET_KEY)


@functools.lru_cache(maxsize=4096)
def _decrypt(token: str, key: str, secret_key: str) -> str:
    # Cached per ciphertext (and key): a credential never changes under the same
    # ciphertext, and the API's list would otherwise open two per instance per request
    # (a tenth of its time). The process that holds the cache holds the key as well.
    try:
        return _fernet_for(key, secret_key).decrypt(token.encode()).decode()
    except InvalidToken:
        return ""
