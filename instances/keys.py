"""SSH public keys and API tokens of a user: parse, save, list, resolve, revoke.

SSH keys are parsed for real (cryptography's OpenSSH loader), so garbage, weak RSA
and DSA keys are refused with a message a customer can act on, and what we store is
a normalised single line: a key is later written into `authorized_keys`, so a
newline or an options prefix (`command="..."`) smuggled into it must never survive.

API tokens: only the SHA-256 of a key is stored; the plain key is returned once by
`token_create` and cannot be recovered afterwards.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from instances import apicache
from instances.errors import InvalidSSHKey, NotFound
from instances.models import ApiToken, SSHKey

RSA_MIN_BITS = 2048
MAX_KEY_CHARS = 16 * 1024
TOKEN_PREFIX = "gpc_"  # noqa: S105 (a public prefix, not a secret)
# last_used_at is a hint for the owner, not an audit log: one write a minute at most
# keeps token authentication a single read on the hot path.
TOKEN_TOUCH_SECONDS = 60

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


def sshkey_list(*, user: AbstractBaseUser) -> QuerySet[SSHKey]:
    return SSHKey.objects.filter(owner=user).order_by("-created_at", "-id")


def sshkey_get(*, user: AbstractBaseUser, key_id: int | str) -> SSHKey:
    """One of the user's keys by id or fingerprint. Raises NotFound for anyone else's."""
    qs = sshkey_list(user=user)
    ref = str(key_id).strip()
    key = qs.filter(fingerprint=ref).first() if ref.startswith("SHA256:") else None
    if key is None and ref.isdigit() and len(ref) < 18:
        key = qs.filter(id=int(ref)).first()
    if key is None:
        raise NotFound("No such SSH key.")
    return key


def sshkey_create(*, user: AbstractBaseUser, public_key: str, name: str = "") -> SSHKey:
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


def sshkey_delete(*, user: AbstractBaseUser, key_id: int | str) -> None:
    """Delete one of the user's keys. Instances keep the keys they were launched with."""
    sshkey_get(user=user, key_id=key_id).delete()


def sshkeys_resolve(*, user: AbstractBaseUser, refs: list[str]) -> list[str]:
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


def token_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_list(*, user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """The user's active (not revoked) tokens."""
    return ApiToken.objects.filter(owner=user, revoked_at__isnull=True).order_by("-created_at", "-id")


def token_create(*, user: AbstractBaseUser, name: str = "") -> tuple[ApiToken, str]:
    """Make a token for the user. Returns the row and the plain key, which is never stored."""
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        owner=user, name=(name or "").strip()[:64] or "api", prefix=key[:12], key_hash=token_hash(key)
    )
    return token, key


def token_revoke(*, user: AbstractBaseUser, token_id: int | str) -> ApiToken:
    """Revoke one of the user's tokens; it stops working at once. Raises NotFound for others'."""
    ref = str(token_id)
    token = token_list(user=user).filter(id=int(ref)).first() if ref.isdigit() and len(ref) < 18 else None
    if token is None:
        raise NotFound("No such API token.")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    return token


@functools.cache
def _token_owner_query(vendor: str) -> tuple[str, list[tuple[Any, list[Any]]]]:
    """The SQL of token_authenticate and, per user column, its database converters
    (none on PostgreSQL; SQLite's text datetimes and integer booleans need them)."""
    user_model = get_user_model()
    users, tokens = user_model._meta.db_table, ApiToken._meta.db_table
    columns = [field.get_col(users) for field in user_model._meta.concrete_fields]
    # Table and column names come from the models, values are bound parameters.
    sql = (
        f"SELECT {', '.join('u.' + connection.ops.quote_name(col.target.column) for col in columns)}, "  # noqa: S608
        f"t.id, (t.last_used_at IS NULL OR t.last_used_at < %s) "
        f"FROM {tokens} t JOIN {users} u ON u.id = t.owner_id "
        f"WHERE t.key_hash = %s AND t.revoked_at IS NULL AND u.is_active"
    )
    converters = [(col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)) for col in columns]
    return sql, converters


def token_authenticate(*, key: str, before_database: Callable[[], None] | None = None) -> ApiToken | None:
    """The active token with this plain key (its owner loaded), or None.

    From this process's API cache while the owner's versions in Redis still match
    (instances.apicache: a revocation or an account change is seen by the next request);
    else one query written by hand: the ORM's compiling of the same join and building
    of two models cost several times its execution. The token carries
    `api_cache_stamp`, the versions read before any database read of this request
    (None when not cached). Side effect: moves last_used_at forward, at most once a
    minute per token. `before_database` runs before the database is asked (the
    authentication-failure throttle: a token answered from the cache was already
    found valid, so only unknown keys are throttled).
    """
    digest = token_hash(key)
    now = timezone.now()
    clock = time.monotonic()
    owner_id = apicache.token_owner_id(digest)
    stamp = apicache.versions(owner_id) if owner_id is not None else None
    hit = apicache.token_get(digest, stamp) if stamp is not None else None
    if hit is not None:
        token = ApiToken(id=hit["token_id"], owner=hit["owner"])
        if clock - hit["touched"] >= TOKEN_TOUCH_SECONDS:
            _token_touch(token_id=token.id, now=now)
            apicache.token_touched(digest, clock)
        token.api_cache_stamp = stamp
        return token

    if before_database is not None:
        before_database()
    sql, converters = _token_owner_query(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [now - timedelta(seconds=TOKEN_TOUCH_SECONDS), digest])
        row = cursor.fetchone()
    if row is None:
        return None
    *values, token_id, stale = row
    for index, (col, funcs) in enumerate(converters):
        for func in funcs:
            values[index] = func(values[index], col, connection)
    user_model = get_user_model()
    owner = user_model.from_db(connection.alias, [f.attname for f in user_model._meta.concrete_fields], values)
    token = ApiToken(id=token_id, owner=owner)
    if stale:
        _token_touch(token_id=token_id, now=now)
        token.last_used_at = now
    # The first request learns the owner (no stamp); the next reads the owner's versions
    # before this query and caches what it found under them.
    token.api_cache_stamp = stamp if owner.pk == owner_id else None
    apicache.token_put(digest, token.api_cache_stamp, owner=copy.copy(owner), token_id=token_id, touched=clock)
    return token


def _token_touch(*, token_id: int, now: datetime) -> None:
    # Conditional update: concurrent requests with one token write once, and no request
    # waits on a row lock held by another. An update() sends no signal: no cache bump.
    stale_before = now - timedelta(seconds=TOKEN_TOUCH_SECONDS)
    ApiToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale_before), id=token_id).update(
        last_used_at=now
    )
