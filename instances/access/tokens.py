"""API tokens of a user: make, list, revoke, and authenticate a request's key.

Only the SHA-256 of a key is stored; the plain key is returned once by `token_create`
and cannot be recovered afterwards. A token may carry an expiry: past it, it fails
authentication as a revoked one does. A password change revokes all of a user's
tokens (`tokens_revoke_all`, called by instances.access.passwords).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from instances import cache as apicache
from instances.errors import InvalidTokenExpiry, NotFound
from instances.models import ApiToken

TOKEN_PREFIX = "gpc_"  # noqa: S105 (a public prefix, not a secret)
# last_used_at is a hint for the owner, not an audit log: one write a minute at most
# keeps token authentication a single read on the hot path.
TOKEN_TOUCH_SECONDS = 60
# What the web page offers as a token's lifetime, besides "never".
TOKEN_EXPIRY_DAYS = (7, 30, 90, 365)


def token_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _unexpired(now: datetime) -> Q:
    return Q(expires_at__isnull=True) | Q(expires_at__gt=now)


def token_list(*, user: Any) -> QuerySet[ApiToken]:
    """The user's active tokens: not revoked, not expired."""
    return ApiToken.objects.filter(_unexpired(timezone.now()), owner=user, revoked_at__isnull=True).order_by(
        "-created_at", "-id"
    )


def token_expiry_in(*, days: str) -> datetime | None:
    """The expiry `days` (one of TOKEN_EXPIRY_DAYS, as the web form sends it) from now;
    None ("never") for an empty value. Raises InvalidTokenExpiry for any other value."""
    if not days.strip():
        return None
    if days.strip() not in {str(d) for d in TOKEN_EXPIRY_DAYS}:
        raise InvalidTokenExpiry(f"Choose an expiry of {', '.join(map(str, TOKEN_EXPIRY_DAYS))} days, or never.")
    return timezone.now() + timedelta(days=int(days))


def token_create(*, user: Any, name: str = "", expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Make a token for the user, valid until `expires_at` (None: until revoked).

    Returns the row and the plain key, which is never stored. Raises InvalidTokenExpiry
    for an expiry that is not in the future.
    """
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidTokenExpiry(detail={"expires_at": expires_at.isoformat()})
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        owner=user,
        name=(name or "").strip()[:64] or "api",
        prefix=key[:12],
        key_hash=token_hash(key),
        expires_at=expires_at,
    )
    return token, key


def token_revoke(*, user: Any, token_id: int | str) -> ApiToken:
    """Revoke one of the user's tokens; it stops working at once. Raises NotFound for others'."""
    ref = str(token_id)
    token = token_list(user=user).filter(id=int(ref)).first() if ref.isdigit() and len(ref) < 18 else None
    if token is None:
        raise NotFound("No such API token.")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    return token


def tokens_revoke_all(*, user: Any) -> int:
    """Revoke every active token of the user (a password change). Returns how many.

    A queryset update sends no post_save: the caller saves the user, whose post_save
    bumps the user's API cache version, so no process keeps answering from them.
    """
    return ApiToken.objects.filter(owner=user, revoked_at__isnull=True).update(revoked_at=timezone.now())


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """A request's authentication by API token (DRF's `request.auth`): the token, its
    owner loaded, and `stamp`, the API cache's versions read before any database read
    of this request (None when not cached), under which the list may be cached."""

    token: ApiToken
    stamp: apicache.Versions | None


def token_authenticate(*, key: str, before_database: Callable[[], None] | None = None) -> TokenAuth | None:
    """The active token with this plain key, its active owner loaded, or None.

    From this process's API cache (instances.cache) while the owner's versions in Redis
    still match: a revocation or an account change is seen by the next request. Else
    one query through the ORM. Side effect: moves last_used_at forward, at most once a
    minute per token. `before_database` runs before the database is asked (the
    authentication-failure throttle: a token answered from the cache was already found
    valid, so only unknown keys are throttled); what it raises propagates.
    """
    digest = token_hash(key)
    now = timezone.now()
    clock = time.monotonic()
    owner_id = apicache.token_owner_id(digest)
    stamp = apicache.versions(owner_id) if owner_id is not None else None
    hit = apicache.token_get(digest, stamp) if stamp is not None else None
    # An expiry passes without any write to bump a version: the cached token is checked.
    if hit is not None and hit[0].expires_at is not None and hit[0].expires_at <= now:
        hit = None
    if hit is not None:
        cached, touched = hit
        if clock - touched >= TOKEN_TOUCH_SECONDS:
            _token_touch(token_id=cached.pk, now=now)
            apicache.token_touched(digest, clock)
        return TokenAuth(cached, stamp)

    if before_database is not None:
        before_database()
    token = (
        ApiToken.objects.select_related("owner")
        .filter(_unexpired(now), key_hash=digest, revoked_at__isnull=True, owner__is_active=True)
        .first()
    )
    if token is None:
        return None
    if token.last_used_at is None or token.last_used_at < now - timedelta(seconds=TOKEN_TOUCH_SECONDS):
        _token_touch(token_id=token.pk, now=now)
        token.last_used_at = now
    # The first request learns the owner (no stamp); the next reads the owner's versions
    # before this query and caches what it found under them.
    if token.owner_id != owner_id:
        stamp = None
    apicache.token_put(digest, stamp, token=token, touched=clock)
    return TokenAuth(token, stamp)


def _token_touch(*, token_id: int, now: datetime) -> None:
    # Conditional update: concurrent requests with one token write once, and no request
    # waits on a row lock held by another. An update() sends no signal: no cache bump.
    stale_before = now - timedelta(seconds=TOKEN_TOUCH_SECONDS)
    ApiToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale_before), id=token_id).update(
        last_used_at=now
    )
