"""The README's walk-through as an operator does it, in a real browser beside the API: log in
to the admin, make a customer a token, credit them from *Billing accounts* (and find the
same link on their user page), launch through the API, reach the instance over SSH, destroy
it — on a live server with a real Celery worker and a real container."""

from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import urllib.request
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from playwright.sync_api import Page, expect

from billing.models import BillingAccount, LedgerEntry
from instances.models import Instance
from tests.containers import ssh_run
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.browser, pytest.mark.docker]

OPERATOR_PASSWORD = "correct-horse-battery-staple"  # tests.factories.UserFactory's


def _api(base: str, token: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - the live test server on loopback
        f"{base}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _poll(base: str, token: str, public_id: str, *statuses: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, body = _api(base, token, "GET", f"/api/gpu/instances/{public_id}")
        if body.get("status") in statuses or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def test_the_readme_walk_through_credits_a_new_customer_and_launches(
    page: Page, live_server, celery_worker, this_host, olga, shoot, settings
):
    settings.GPUCLOUD_ADMISSION_CHECKS = ["billing.checks.balance_covers_launch"]
    TemplateFactory()  # the local test image, as scripts/run seeds debian-ssh-demo
    base = live_server.url

    # A token for a customer who does not exist yet: the command creates them, with an
    # account in Billing accounts from the start.
    out = io.StringIO()
    call_command("create_api_token", "dana", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    dana = get_user_model().objects.get(username="dana")
    assert BillingAccount.objects.get(user=dana).balance_usd == 0

    # Before any credit the launch is refused, and says how much is needed.
    launch = {"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh"]}
    status, body = _api(base, token, "POST", "/api/gpu/instances", launch)
    assert status == HTTPStatus.PAYMENT_REQUIRED, body
    assert body["error"]["code"] == "billing:insufficient-balance"
    assert "an RTX 5090" in body["error"]["message"]
    assert not Instance.objects.filter(owner=dana).exists()

    # The operator logs in and credits dana from Billing accounts.
    page.goto(f"{base}/admin/")
    page.fill("input[name=username]", olga.username)
    page.fill("input[name=password]", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    page.click("text=Billing accounts")
    row = page.locator("#result_list tr", has_text="dana")
    expect(row).to_be_visible()
    shoot(page, "20-admin-billing-accounts")
    row.get_by_role("link", name="Credit / debit").click()
    expect(page.get_by_text(re.compile("Current balance of"))).to_contain_text("dana")
    page.fill("input[name=amount_usd]", "20")
    page.fill("textarea[name=reason]", "Welcome credit")
    shoot(page, "21-admin-credit")
    page.click("input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text(re.compile(r"dana: \+20\.00 USD recorded", re.I))
    entry = LedgerEntry.objects.get(user=dana, kind="adjustment")
    assert (entry.amount_usd, entry.operator_id, entry.reason) == (Decimal("20.00"), olga.pk, "Welcome credit")

    # The user's own page shows the balance and leads to the same form.
    page.goto(f"{base}/admin/auth/user/{dana.pk}/change/")
    billing = page.locator(".form-row.field-balance")
    expect(billing).to_contain_text("$20.00")
    expect(billing.get_by_role("link", name="Credit / debit")).to_have_attribute(
        "href", f"/admin/billing/billingaccount/adjust/{dana.pk}/"
    )
    shoot(page, "22-admin-user-balance")

    # Now the launch goes through; the instance runs and answers over SSH.
    status, body = _api(base, token, "POST", "/api/gpu/instances?wait=20", launch)
    assert status == HTTPStatus.ACCEPTED, body
    body = _poll(base, token, body["id"], "running", "failed")
    assert body["status"] == "running", body
    assert body["access"]["ssh"].startswith("ssh root@127.0.0.1 -p ")
    instance = Instance.objects.get(public_id=body["id"])
    assert "uid=0(root)" in ssh_run(instance, "id", password=body["access"]["password"])

    # Destroyed: it ends, and what opened it is gone from the API.
    status, body = _api(base, token, "DELETE", f"/api/gpu/instances/{instance.public_id}")
    assert status == HTTPStatus.ACCEPTED, body
    body = _poll(base, token, instance.public_id, "terminated")
    assert body["status"] == "terminated", body
    assert "password" not in body["access"]
