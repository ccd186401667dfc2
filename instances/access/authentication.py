"""API token authentication, and throttles for launches and failed authentications.

Clients send `Authorization: Token <key>` (or `Bearer <key>`). A client that keeps
sending bad keys is answered 429 with Retry-After before its keys are even looked
up, so guessing keys costs the guesser time rather than us database reads.
"""

from __future__ import annotations

import math
import time
from typing import Any, cast

from django.core.cache import cache
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle

from instances.access.tokens import token_authenticate
from instances.errors import LaunchThrottled

KEYWORDS = (b"token", b"bearer")


def _rate(scope: str) -> tuple[int, int]:
    """(requests, seconds) for a scope, read at call time so settings overrides apply."""
    rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope)
    if not rate:
        return 0, 0
    requests, seconds = SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]
    return requests or 0, seconds or 0


def client_ip(request: Request | HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or behind NUM_PROXIES trusted proxies
    (settings.GPUCLOUD_TRUSTED_PROXIES) the right-most address of X-Forwarded-For that
    none of them wrote. A client cannot choose it: what it sends lies further left."""
    proxies = api_settings.NUM_PROXIES or 0
    forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",")]
    if proxies and len(forwarded) >= proxies and forwarded[-proxies]:
        return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "")


class AuthFailureThrottle:
    """Counts failed token authentications per client address in a fixed window."""

    scope = "auth-failure"

    def _keys(self, ident: str) -> tuple[str, str]:
        base = f"gpucloud:throttle:{self.scope}:{ident}"
        return base + ":count", base + ":reset"

    def check(self, ident: str) -> None:
        limit, window = _rate(self.scope)
        if not limit:
            return
        count_key, reset_key = self._keys(ident)
        if (cache.get(count_key) or 0) >= limit:
            reset_at = cache.get(reset_key) or time.time() + window
            raise exceptions.Throttled(
                wait=max(1, int(reset_at - time.time()) + 1),
                detail="Too many failed authentications; try again later.",
            )

    def record_failure(self, ident: str) -> None:
        limit, window = _rate(self.scope)
        if not limit:
            return
        count_key, reset_key = self._keys(ident)
        # add() opens the window once; incr() is atomic on Redis, so concurrent
        # failures from one address are all counted.
        if cache.add(count_key, 0, timeout=window):
            cache.set(reset_key, time.time() + window, timeout=window)
        try:
            cache.incr(count_key)
        except ValueError:  # the window expired between add() and incr()
            cache.add(count_key, 1, timeout=window)


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Token <key>` or `Bearer <key>`; keys are looked up by SHA-256."""

    throttle = AuthFailureThrottle()

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() not in KEYWORDS:
            return None
        ident = client_ip(request)
        if len(header) != 2:
            self.throttle.check(ident)
            self.throttle.record_failure(ident)
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Token <key>'.")
        try:
            key = header[1].decode("ascii")
        except UnicodeError:
            self.throttle.check(ident)
            self.throttle.record_failure(ident)
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        # Throttled before the database is asked: a key this process already knows to be
        # valid is not a guess, every other one is.
        found = token_authenticate(key=key, before_database=lambda: self.throttle.check(ident))
        if found is None:
            self.throttle.record_failure(ident)
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return found.token.owner, found

    def authenticate_header(self, request: Request) -> str:
        return "Token"


class InstanceCreateThrottle(UserRateThrottle):
    """Launches per user (scope `instance-create`); other requests are not counted."""

    scope = "instance-create"

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return str(rate) if rate else None

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method != "POST":
            return True
        # Re-read the rate each time: DRF binds it at class creation otherwise.
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


def instance_create_throttle_check(*, request: HttpRequest) -> None:
    """Count a web launch in the user's `instance-create` bucket, the one the API's
    launches count in (same cache key), so the page is no way around the API's rate.

    Side effect: records the attempt in the cache. Raises LaunchThrottled (429; detail:
    retry_after seconds) when the rate is spent.
    """
    throttle = InstanceCreateThrottle()
    # DRF's throttle reads only .method, .user and .META, which a Django request has.
    if not throttle.allow_request(cast(Request, request), None):
        wait = math.ceil(throttle.wait() or 1)
        raise LaunchThrottled(
            f"Too many launches in a short time. Try again in {wait} seconds.", detail={"retry_after": wait}
        )
