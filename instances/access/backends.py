"""Django's username/password backend behind the failed-login rate limits.

allauth throttles failed logins on its own form (/accounts/login/, ACCOUNT_RATE_LIMITS
"login_failed"), but Django's login pages, the admin's (/admin/login/, where operators
sign in) and the browsable API's (/api-auth/login/), authenticate through
ModelBackend with no limit at all: an open door for password guessing against the
accounts that matter most. This backend charges the same "login_failed" limits
(per address, shared with allauth's form, and per username) and refuses, without
checking the password, once they are spent; a success gives its charge back, as
allauth does, so logging in never locks anyone out.
"""

from __future__ import annotations

from typing import Any

from allauth.core.internal import ratelimit  # pinned django-allauth: its limiter, rates from ACCOUNT_RATE_LIMITS
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest


class ThrottledModelBackend(ModelBackend):
    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if request is None or username is None:  # no client to throttle (a shell, a test's force_login)
            return super().authenticate(request, username=username, password=password, **kwargs)
        usage = ratelimit.consume(
            request=request, app="allauth.account", action="login_failed", key=f"username:{username.lower()}"
        )
        if not usage:
            return None
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            usage.rollback()
        return user
