"""Per-client limits behind the TLS proxy (issue 16, part 3).

Behind a proxy every request comes from the proxy's address; with
GPUCLOUD_TRUSTED_PROXIES=1 the client is the right-most address of X-Forwarded-For (the
one the proxy appended), so one guesser's failures charge that guesser only. With 0 the
header is ignored: a client cannot escape a limit by writing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path

import pytest
import yaml
from allauth.account.models import EmailAddress
from django.test import Client
from rest_framework.test import APIClient

from instances.access.tokens import token_create

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery-staple"  # tests.factories.UserFactory's
PROXY = "172.18.0.1"  # what Django sees as REMOTE_ADDR behind the compose stack's proxy


@pytest.fixture
def proxies(settings):
    """Set the trusted proxy count as GPUCLOUD_TRUSTED_PROXIES does (DRF and allauth)."""

    def use(count: int) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "NUM_PROXIES": count,
            "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "auth-failure": "5/minute"},
        }
        settings.ALLAUTH_TRUSTED_PROXY_COUNT = count

    return use


def _api(*, remote: str, forwarded: str | None, key: str) -> int:
    extra = {"REMOTE_ADDR": remote} | ({"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {})
    client = APIClient(**extra)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/gpu/instances").status_code


def _guess(*, remote: str, forwarded: str, times: int) -> None:
    for _ in range(times):
        assert _api(remote=remote, forwarded=forwarded, key="guessed-" + os.urandom(8).hex()) == 401


@pytest.mark.parametrize(("value", "expected"), [(None, "0 0"), ("1", "1 1"), ("2", "2 2")])
def test_one_variable_sets_drfs_and_allauths_proxy_counts(value, expected):
    env = {k: v for k, v in os.environ.items() if k != "GPUCLOUD_TRUSTED_PROXIES"} | {"DEBUG": "1"}
    if value is not None:
        env["GPUCLOUD_TRUSTED_PROXIES"] = value
    dump = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; "
         "print(s.REST_FRAMEWORK['NUM_PROXIES'], s.ALLAUTH_TRUSTED_PROXY_COUNT)"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "gpucloud.settings"}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert dump.stdout.strip() == expected, dump.stderr


def test_the_compose_stack_trusts_its_one_proxy():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    web = compose["services"]["web"]["environment"]
    assert web["GPUCLOUD_TRUSTED_PROXIES"] == "${GPUCLOUD_TRUSTED_PROXIES:-1}"
    assert web["DATABASE_URL"]  # the shared environment is still merged in
    assert "GPUCLOUD_TRUSTED_PROXIES" not in compose["services"]["worker"]["environment"]


def test_behind_one_proxy_bad_tokens_of_one_client_do_not_throttle_another(alice, proxies):
    proxies(1)
    _, key = token_create(user=alice, name="real")
    _guess(remote=PROXY, forwarded="203.0.113.7", times=5)
    # The guesser waits, even with a good key and whatever it writes left of the proxy's entry…
    assert _api(remote=PROXY, forwarded="203.0.113.7", key=key) == HTTPStatus.TOO_MANY_REQUESTS
    assert _api(remote=PROXY, forwarded="198.51.100.1, 203.0.113.7", key=key) == HTTPStatus.TOO_MANY_REQUESTS
    # …another client through the same proxy is served.
    assert _api(remote=PROXY, forwarded="203.0.113.8", key=key) == HTTPStatus.OK


def test_without_trusted_proxies_x_forwarded_for_is_ignored(alice, proxies):
    proxies(0)
    _, key = token_create(user=alice, name="real")
    for n in range(5):  # a new made-up forwarded address each time
        _guess(remote="10.66.0.1", forwarded=f"203.0.113.{n}", times=1)
    assert _api(remote="10.66.0.1", forwarded="198.51.100.99", key=key) == HTTPStatus.TOO_MANY_REQUESTS
    assert _api(remote="10.66.0.2", forwarded=None, key=key) == HTTPStatus.OK


def _login(*, remote: str, forwarded: str, email: str, password: str):
    client = Client(REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    return client.post("/accounts/login/", {"login": email, "password": password})


def test_behind_one_proxy_bad_logins_of_one_client_do_not_lock_another(bob, proxies):
    proxies(1)
    EmailAddress.objects.create(user=bob, email=bob.email, verified=True, primary=True)
    # "10/m/ip": ten wrong logins spread over accounts spend the guesser's budget…
    answers = [
        _login(remote=PROXY, forwarded="203.0.113.20", email=f"nobody{i}@example.com", password="wrong")
        for i in range(11)
    ]
    assert b"Too many failed login attempts" in answers[10].content
    assert (
        b"Too many failed login attempts"
        in _login(remote=PROXY, forwarded="198.51.100.5, 203.0.113.20", email=bob.email, password=PASSWORD).content
    )
    # …and only its own: bob, through the same proxy, logs in.
    ok = _login(remote=PROXY, forwarded="203.0.113.21", email=bob.email, password=PASSWORD)
    assert ok.status_code == HTTPStatus.FOUND


def test_behind_one_proxy_the_admin_login_is_not_locked_for_everyone(olga, proxies):
    proxies(1)
    for i in range(11):
        Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.30").post(
            "/admin/login/", {"username": f"nobody{i}", "password": "wrong"}
        )
    operator = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.31")
    operator.post("/admin/login/", {"username": olga.username, "password": PASSWORD})
    assert "_auth_user_id" in operator.session


def test_without_trusted_proxies_a_login_cannot_spoof_its_way_out(bob, proxies):
    proxies(0)
    EmailAddress.objects.create(user=bob, email=bob.email, verified=True, primary=True)
    for i in range(11):
        _login(remote="10.66.1.1", forwarded=f"203.0.113.{i}", email=f"nobody{i}@example.com", password="wrong")
    locked = _login(remote="10.66.1.1", forwarded="198.51.100.77", email=bob.email, password=PASSWORD)
    assert b"Too many failed login attempts" in locked.content
