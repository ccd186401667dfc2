"""SSH public keys of a user: parse, save, list, resolve, delete.

SSH keys are parsed for real (cryptography's OpenSSH loader), so garbage, weak RSA
and DSA keys are refused with a message a customer can act on, and what we store is
a normalised single line: a key is later written into `authorized_keys`, so a
newline or an options prefix (`command="..."`) smuggled into it must never survive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from instances.errors import InvalidSSHKey, NotFound
from instances.models import SSHKey

RSA_MIN_BITS = 2048
MAX_KEY_CHARS = 16 * 1024

_KEY_TYPE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)$")
_COMMENT_BAD = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class ParsedKey:
    key_type: str
    bits: int | None
    fingerprint: str
    comment: str
    # "<type> <base64> [comment]" on one line: what goes into authorized_keys.
    normalized: str


def sshkey_fingerprint(blob: bytes) -> str:
    """OpenSSH's `SHA256:` fingerprint of a key blob (base64 without padding)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def sshkey_parse(*, public_key: str) -> ParsedKey:
    """Parse one OpenSSH public key line. Raises InvalidSSHKey with a clear reason."""
    text = (public_key or "").strip()
    if not text:
        raise InvalidSSHKey("The SSH public key is empty.")
    if len(text) > MAX_KEY_CHARS:
        raise InvalidSSHKey("The SSH public key is too long.")
    if "\n" in text or "\r" in text or "\x00" in text:
        raise InvalidSSHKey("Paste exactly one SSH public key, on one line.")
    if text.startswith("-----BEGIN"):
        raise InvalidSSHKey(
            "That is a PEM key; paste the OpenSSH public key (the contents of ~/.ssh/id_ed25519.pub or similar)."
        )
    if "PRIVATE KEY" in text:
        raise InvalidSSHKey("That looks like a private key. Never share it: paste the public key (.pub) instead.")
    parts = text.split(None, 2)
    if len(parts) < 2 or not _KEY_TYPE.match(parts[0]):
        raise InvalidSSHKey(
            "That is not an OpenSSH public key: expected '<type> <base64> [comment]', "
            "for example 'ssh-ed25519 AAAA... me@laptop'."
        )
    key_type, b64 = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) == 3 else ""
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSSHKey("The key's base64 part is damaged (was it cut when copied?).") from None
    if key_type == "ssh-dss":
        raise InvalidSSHKey("DSA keys are insecure and refused by current OpenSSH; use ssh-ed25519.")
    try:
        key = load_ssh_public_key(f"{key_type} {b64}".encode("ascii"))
    except UnsupportedAlgorithm:
        raise InvalidSSHKey(f"Keys of type {key_type} are not supported; use ssh-ed25519 or RSA.") from None
    except (ValueError, UnicodeEncodeError):
        raise InvalidSSHKey("The key could not be read: it is damaged or its type does not match its data.") from None

    if isinstance(key, rsa.RSAPublicKey):
        bits: int | None = key.key_size
        if key.key_size < RSA_MIN_BITS:
            raise InvalidSSHKey(
                f"This RSA key has {key.key_size} bits; at least {RSA_MIN_BITS} are required "
                "(ssh-keygen -t ed25519 makes a better one)."
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.curve.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        bits = 256
    else:  # security-key types (sk-*): the size is the underlying curve's.
        bits = 256
    # A comment is free text for the owner; keep it printable so it cannot break the line.
    comment = _COMMENT_BAD.sub("", comment)[:100].strip()
    normalized = f"{key_type} {b64}" + (f" {comment}" if comment else "")
    return ParsedKey(
        key_type=key_type, bits=bits, fingerprint=sshkey_fingerprint(blob), comment=comment, normalized=normalized
    )


def sshkey_list(*, user: Any) -> QuerySet[SSHKey]:
    return SSHKey.objects.filter(owner=user).order_by("-created_at", "-id")


def sshkey_get(*, user: Any, key_id: int | str) -> SSHKey:
    """One of the user's keys by id or fingerprint. Raises NotFound for anyone else's."""
    qs = sshkey_list(user=user)
    ref = str(key_id).strip()
    key = qs.filter(fingerprint=ref).first() if ref.startswith("SHA256:") else None
    if key is None and ref.isdigit() and len(ref) < 18:
        key = qs.filter(id=int(ref)).first()
    if key is None:
        raise NotFound("No such SSH key.")
    return key


def sshkey_create(*, user: Any, public_key: str, name: str = "") -> SSHKey:
    """Save a parsed, normalised public key for the user.

    Raises InvalidSSHKey for garbage, RSA under 2048 bits, DSA, a key already saved
    or a name already used.
    """
    parsed = sshkey_parse(public_key=public_key)
    name = (name or "").strip() or parsed.comment or parsed.fingerprint[7:19]
    name = name[:64]
    existing = SSHKey.objects.filter(owner=user, fingerprint=parsed.fingerprint).first()
    if existing is not None:
        raise InvalidSSHKey(
            f"This key is already saved as '{existing.name}'.", detail={"fingerprint": parsed.fingerprint}
        )
    if SSHKey.objects.filter(owner=user, name=name).exists():
        raise InvalidSSHKey(f"You already have a key named '{name}'; choose another name.")
    try:
        # The unique constraints are the backstop for two identical requests at once.
        with transaction.atomic():
            return SSHKey.objects.create(
                owner=user,
                name=name,
                public_key=parsed.normalized,
                key_type=parsed.key_type,
                bits=parsed.bits,
                fingerprint=parsed.fingerprint,
            )
    except IntegrityError:
        raise InvalidSSHKey("This key or its name is already saved.") from None


def sshkey_delete(*, user: Any, key_id: int | str) -> None:
    """Delete one of the user's keys. Instances keep the keys they were launched with."""
    sshkey_get(user=user, key_id=key_id).delete()


def sshkeys_resolve(*, user: Any, refs: list[str]) -> list[str]:
    """Public key lines for a launch: each ref is a saved key's id or fingerprint, or a raw key.

    Raises InvalidSSHKey naming the first ref that is neither the user's key nor a valid key.
    """
    keys: list[str] = []
    for ref in refs:
        text = str(ref).strip()
        if text.isdigit() or text.startswith("SHA256:"):
            try:
                keys.append(sshkey_get(user=user, key_id=text).public_key)
            except NotFound:
                raise InvalidSSHKey(f"No saved SSH key of yours matches '{text[:64]}'.") from None
        else:
            keys.append(sshkey_parse(public_key=text).normalized)
    return list(dict.fromkeys(keys))
