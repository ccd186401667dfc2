"""No secret in any log: a launch, a top-up, failed and good logins, every line captured.

Captured: every log record of this process at DEBUG (it is the web process: the
live server's requests and everything the views, billing and the Stripe SDK log),
its stdout/stderr, the lines the real Celery worker wrote to its log file during the
test, and the container's own output (`docker logs`, which the logs API serves).
"""

from __future__ import annotations

import logging
import re
import secrets
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from billing import stripe as billing_stripe
from billing.models import LedgerEntry
from instances.access.crypto import decrypt
from instances.access.tokens import token_create
from instances.models import Instance
from tests.billing.helpers import WEBHOOK_SECRET, webhook_path
from tests.containers import docker, ssh_run
from tests.factories import TemplateFactory
from tests.processes import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.celery]


def _login(session: requests.Session, base: str, email: str, password: str) -> requests.Response:
    page = session.get(f"{base}/accounts/login/", timeout=30)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return session.post(
        f"{base}/accounts/login/",
        data={"login": email, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=30,
        allow_redirects=False,
    )


def _register_webhook(localstripe: str, fields: dict[str, str]) -> None:
    hook = urllib.request.Request(  # noqa: S310 - loopback localstripe
        f"{localstripe}/_config/webhooks/security-logs", data=urllib.parse.urlencode(fields).encode()
    )
    urllib.request.urlopen(hook, timeout=10).close()  # noqa: S310 - loopback localstripe


@pytest.fixture
def stripe_webhooks(security_localstripe, live_server, webhook_endpoint, settings) -> Iterator[None]:
    """The SDK pointed at localstripe, which delivers `payment_intent.succeeded` to this
    test's endpoint, then stops (it has no unregister: a registration with no events sends nothing)."""
    settings.STRIPE_API_HOST = security_localstripe
    fields = {"url": live_server.url + webhook_path(webhook_endpoint), "secret": WEBHOOK_SECRET}
    _register_webhook(security_localstripe, {**fields, "events[]": "payment_intent.succeeded"})
    yield
    _register_webhook(security_localstripe, fields)


def test_no_password_token_or_secret_reaches_any_log(
    celery_worker, live_server, alice, tenant_host, stripe_webhooks, settings, caplog, capfd
):
    from allauth.account.models import EmailAddress

    caplog.set_level(logging.DEBUG)
    worker_log = Path(settings.VAR_DIR) / "test-worker.log"
    worker_offset = worker_log.stat().st_size
    settings.STRIPE_TEST_SECRET_KEY = "sk_test_" + secrets.token_hex(16)
    login_password = "Lg-" + secrets.token_urlsafe(12)
    wrong_password = "Wr-" + secrets.token_urlsafe(12)
    alice.set_password(login_password)
    alice.save()
    EmailAddress.objects.create(user=alice, email=alice.email, verified=True, primary=True)
    TemplateFactory()
    _, api_token = token_create(user=alice, name="logs")
    api = requests.Session()
    api.headers["Authorization"] = f"Token {api_token}"
    base = live_server.url

    # A launch through the API, waited for, then used over SSH.
    launched = api.post(
        f"{base}/api/gpu/instances?wait=60",
        json={"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh", "jupyter"]},
        timeout=90,
    )
    assert launched.status_code == 202, launched.text
    instance = Instance.objects.get(public_id=launched.json()["id"])
    assert instance.status == "running", instance.last_error
    root_password = decrypt(instance.password_encrypted)
    access_token = decrypt(instance.access_token_encrypted)
    assert api.get(f"{base}/api/gpu/instances/{instance.public_id}", timeout=30).json()["access"]["password"] == (
        root_password
    )
    assert ssh_run(instance, "echo in", password=root_password).strip() == "in"
    assert api.get(f"{base}/api/gpu/instances/{instance.public_id}/logs", timeout=30).status_code == 200

    # A top-up, paid at localstripe, credited by the signed webhook it sends us.
    topup = api.post(f"{base}/api/billing/topups", json={"amount_usd": "25.00"}, timeout=30)
    assert topup.status_code == 201, topup.text
    client_secret = topup.json()["client_secret"]
    assert (
        billing_stripe.payment_intent_confirm(
            payment_intent_id=topup.json()["id"], payment_method="pm_card_visa"
        ).status
        == "succeeded"
    )
    wait_until(lambda: LedgerEntry.objects.filter(user=alice, kind="topup").exists(), timeout=20, what="the top-up")
    assert LedgerEntry.objects.get(user=alice, kind="topup").amount_usd == Decimal("25.00")

    # A failed login, a bad API token, then a good login.
    browser = requests.Session()
    assert _login(browser, base, alice.email, wrong_password).status_code == 200
    assert requests.get(f"{base}/api/gpu/instances", headers={"Authorization": "Token " + api_token[::-1]},
                        timeout=30).status_code == 401  # fmt: skip
    assert _login(browser, base, alice.email, login_password).status_code == 302

    # The worker's last line for the launch is its task's "succeeded": wait for it to
    # reach the file, then read everything.
    provisioned = re.compile(r"instances\.tasks\.instance_provision\[[^\]]+\] succeeded")
    wait_until(
        lambda: provisioned.search(worker_log.read_text(errors="replace")[worker_offset:]),
        timeout=20,
        what="the worker to log the launch's task as done",
    )
    captured = capfd.readouterr()
    texts = {
        "log records": "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "stdout/stderr": captured.out + captured.err,
        "worker log": worker_log.read_text(errors="replace")[worker_offset:],
        "container output": docker("logs", instance.container_name) + docker_stderr(instance.container_name),
    }
    # The capture did capture: each source holds what this test did.
    assert instance.public_id in texts["worker log"]
    assert "running" in texts["worker log"]
    assert "/api/billing/topups" in texts["log records"]
    assert "/accounts/login/" in texts["log records"]
    assert "credited" in texts["log records"]

    secrets_used = {
        "root password": root_password,
        "access token": access_token,
        "API token": api_token,
        "Stripe secret key": settings.STRIPE_TEST_SECRET_KEY,
        "webhook secret": WEBHOOK_SECRET,
        "login password": login_password,
        "wrong password tried": wrong_password,
        "PaymentIntent client secret": client_secret,
    }
    leaks = [
        f"{what} in {where}"
        for what, secret in secrets_used.items()
        for where, text in texts.items()
        if secret and secret in text
    ]
    assert not leaks, leaks


def docker_stderr(container: str) -> str:
    import subprocess

    return subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=False).stderr
