"""The API cache: an in-process cache of the API's two hottest reads, kept exact by
versions in Redis.

Every API call authenticates a token (instances.access.tokens), and clients poll the
instance list (instances.api.instances). Each web process keeps, per token, the token
row with its owner as the ORM loaded them and, per (user, filter, page), the list's
rendered JSON, each stamped with the versions it was read under:

- the user's version, bumped on any change to their instances (and their timeline),
  port bindings, API tokens or account;
- the catalog's version, bumped on any change to GPU types, hosts or templates.

A request reads both in one Redis round trip (`versions`); an entry is used only while
both still match and it is younger than ENTRY_SECONDS. Versions are read before the
database, so an entry never holds data older than its stamp. Bumps come only from
this app's model signals (instances.signals); each bumps at once and again after the
commit, so a reader that saw the first bump and then read the not yet committed state
is corrected by the second. A revoked token or a stopped instance is therefore seen by
the next request in every process; a bump lost to a crash or a Redis fault is bounded
by ENTRY_SECONDS. Without REDIS_URL (the quick start), with GPUCLOUD_API_CACHE=0, or
while Redis fails, nothing is cached and every request reads the database.

Entries hold credentials (the owner's list shows them): they stay in this process's
memory, which holds the key that decrypts them anyway, and never go to Redis.
"""

from __future__ import annotations

import copy
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
from django.conf import settings
from django.db import transaction

from instances.models import ApiToken

logger = logging.getLogger(__name__)

ENTRY_SECONDS = 10.0
MAX_TOKENS = 4096
MAX_LISTS = 512  # pages of up to ~40 KB each: ~20 MB per process at most
CATALOG_KEY = "gpucloud:v:catalog"
REDIS_ERRORS = (redis.RedisError, OSError, ValueError)

Versions = tuple[bytes, bytes]


@dataclass
class _Entry:
    stamp: Versions | None  # None: only the token's owner is known, nothing is cached yet
    at: float
    value: Any


_lock = threading.Lock()
_tokens: OrderedDict[str, _Entry] = OrderedDict()  # by token digest: [ApiToken, last touched]
_lists: OrderedDict[tuple, _Entry] = OrderedDict()  # by (kind, user id, page as asked)
_client: redis.Redis | None = None


def enabled() -> bool:
    return bool(settings.REDIS_URL) and settings.GPUCLOUD_API_CACHE


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        # Short timeouts: a slow Redis must cost a request little, then it reads the database.
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return _client


def _user_key(user_id: int) -> str:
    return f"gpucloud:v:user:{user_id}"


def versions(user_id: int) -> Versions | None:
    """The user's and the catalog's versions, or None (cache off, or Redis failing).

    A missing version (a new user, or Redis restarted empty) starts at a random value,
    so an entry stamped before a restart never matches one after it."""
    if not enabled():
        return None
    keys = [_user_key(user_id), CATALOG_KEY]
    try:
        found = _redis().mget(keys)
        if None in found:
            pipe = _redis().pipeline()
            for key in keys:
                pipe.set(key, secrets.randbits(62), nx=True)
            pipe.mget(keys)
            found = pipe.execute()[-1]
    except REDIS_ERRORS as exc:
        logger.warning("API cache bypassed: Redis: %s", type(exc).__name__)
        return None
    return cast(Versions, (found[0], found[1]))  # bytes: the client decodes nothing


def _bump(key: str) -> None:
    try:
        pipe = _redis().pipeline()
        pipe.set(key, secrets.randbits(62), nx=True)  # never restart at 1 after a Redis restart
        pipe.incr(key)
        pipe.execute()
    except REDIS_ERRORS as exc:  # never fails the write it follows
        logger.warning("API cache version not bumped (entries expire in %ss): %s", ENTRY_SECONDS, type(exc).__name__)


def _changed(key: str) -> None:
    if not enabled():
        return
    _bump(key)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _bump(key))


def user_changed(user_id: int | None) -> None:
    """Something the user's API answers show changed (or is about to commit).

    Side effect: bumps the user's version in Redis now and after the commit. Called by
    instances.signals only; never raises (a Redis fault is logged)."""
    if user_id is not None:
        _changed(_user_key(user_id))


def catalog_changed() -> None:
    """A GPU type, host or template changed: every user's list may show it. As user_changed."""
    _changed(CATALOG_KEY)


def _get(store: OrderedDict, key: Any, stamp: Versions) -> Any:
    entry = store.get(key)
    if entry is None or entry.stamp != stamp or time.monotonic() - entry.at > ENTRY_SECONDS:
        return None
    return entry.value


def _put(store: OrderedDict, key: Any, stamp: Versions | None, value: Any, limit: int) -> None:
    with _lock:
        store[key] = _Entry(stamp, time.monotonic(), value)
        store.move_to_end(key)
        while len(store) > limit:
            store.popitem(last=False)


def token_owner_id(digest: str) -> int | None:
    """The user a token (by digest) belonged to when last seen: tokens never change owner."""
    entry = _tokens.get(digest)
    return entry.value[0].owner_id if entry is not None else None


def token_get(digest: str, stamp: Versions) -> tuple[ApiToken, float] | None:
    """The token (by digest) found valid under `stamp`, and when this process last
    recorded its use (time.monotonic()). A copy, owner included: requests may set
    attributes on either."""
    value = _get(_tokens, digest, stamp)
    if value is None:
        return None
    token, touched = value
    found = copy.copy(token)
    found.owner = copy.copy(token.owner)
    return found, touched


def token_put(digest: str, stamp: Versions | None, *, token: ApiToken, touched: float) -> None:
    """Remember a token found valid (as the ORM loaded it, with its owner); under
    `stamp`, or (None) only its owner, for the next request to read the owner's
    versions before the database."""
    if enabled():
        kept = copy.copy(token)
        kept.owner = copy.copy(token.owner)
        _put(_tokens, digest, stamp, [kept, touched], MAX_TOKENS)


def token_touched(digest: str, at: float) -> None:
    """Record that this process wrote the token's last_used_at at `at` (time.monotonic())."""
    entry = _tokens.get(digest)
    if entry is not None:
        entry.value[1] = at


def list_get(key: tuple, stamp: Versions, fetch: Callable[[], Any]) -> Any:
    """`fetch()`'s answer for `key` (which must name the user), from the cache while
    `stamp` (read before any database read of this request) still holds."""
    value = _get(_lists, key, stamp)
    if value is None:
        value = fetch()
        _put(_lists, key, stamp, value, MAX_LISTS)
    return value


def clear() -> None:
    """Forget every entry of this process (tests; an operator never needs it)."""
    with _lock:
        _tokens.clear()
        _lists.clear()
