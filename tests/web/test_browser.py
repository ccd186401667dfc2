"""The customer journey in a real browser, against a live server, a real Celery worker,
real Docker containers and localstripe: sign up → verify → log in → top up → launch →
running without a reload → credentials → stop → start → destroy → the charge is billed."""

from __future__ import annotations

import re
import time
import urllib.parse
import urllib.request
from decimal import Decimal

import pytest
from django.core import mail
from django.core.cache import cache
from djstripe.models import WebhookEndpoint
from playwright.sync_api import Page, expect

from billing.models import LedgerEntry, UsageRecord
from billing.tasks import meter_usage
from instances.models import Instance
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.browser, pytest.mark.docker]

WEBHOOK_SECRET = "whsec_browser_journey_0123456789"
PASSWORD = "a-Long-and-unusual-passphrase-42"
SLOW = 120_000  # ms: a container start on a loaded CI machine


def _register_webhook(localstripe: str, url: str) -> None:
    data = urllib.parse.urlencode({"url": url, "secret": WEBHOOK_SECRET, "events[]": "payment_intent.succeeded"})
    urllib.request.urlopen(f"{localstripe}/_config/webhooks/browser-journey", data=data.encode(), timeout=10).close()  # noqa: S310


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.3)


@pytest.fixture
def journey_setup(live_server, localstripe, celery_worker, this_host, settings):
    settings.GPUCLOUD_STRIPE_JS_URL = f"{localstripe}/js.stripe.com/v3/"
    cache.clear()  # allauth's rate limits (one confirmation email per address) live in Redis
    TemplateFactory()  # the local test image, as the operator would add it
    WebhookEndpoint.objects.filter(id="we_browser_journey").delete()  # left by an interrupted run
    endpoint = WebhookEndpoint.objects.create(
        id="we_browser_journey",
        url=live_server.url,
        secret=WEBHOOK_SECRET,
        enabled_events=["*"],
        status="enabled",
        livemode=False,
        api_version="2024-06-20",
    )
    _register_webhook(localstripe, f"{live_server.url}/stripe/webhook/{endpoint.djstripe_uuid}/")
    return live_server.url


def test_a_customer_signs_up_pays_launches_and_is_billed(page: Page, journey_setup, shoot):
    base = journey_setup
    page.on("dialog", lambda dialog: dialog.accept())  # the stop/destroy confirmations
    email = "carol@example.com"

    # Sign up, then verify the address from the email.
    page.goto(f"{base}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    shoot(page, "01-login")
    page.goto(f"{base}/accounts/signup/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    shoot(page, "02-signup")
    page.click("button[type=submit]")
    expect(page.get_by_text(re.compile("verify|confirm", re.I)).first).to_be_visible()
    shoot(page, "03-verify-sent")
    _wait_for(lambda: len(mail.outbox) > 0, timeout=10)
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", mail.outbox[-1].body).group(0)
    page.goto(base + urllib.parse.urlparse(link).path)
    page.click("button[type=submit]")

    # Log in as a returning customer would.
    page.goto(f"{base}/accounts/logout/")
    page.click("button[type=submit]")
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Instances", exact=True)).to_be_visible()
    shoot(page, "04-dashboard-empty")

    # Top up $20 with a card at (local) Stripe; the webhook credits the balance.
    page.goto(f"{base}/billing/")
    page.fill("#amount", "20.00")
    page.click("text=Continue to payment")
    expect(page.get_by_role("heading", name=re.compile(r"Top up \$20"))).to_be_visible()
    page.fill("#card-element input[placeholder=number]", "4242424242424242")
    page.fill("#card-element input[placeholder=exp_month]", "12")
    page.fill("#card-element input[placeholder=exp_year]", "34")
    page.fill("#card-element input[placeholder=cvc]", "123")
    page.fill("#card-element input[placeholder=postal_code]", "10001")
    shoot(page, "05-topup-card")
    page.click("#pay")
    expect(page.locator("#balance")).to_have_text("$20.00", timeout=30_000)
    shoot(page, "06-billing-credited")
    assert LedgerEntry.objects.get(user__email=email, kind="topup").amount_usd == Decimal("20.00")

    # Launch the test image on a simulated RTX 5090; it turns running without a reload.
    page.goto(f"{base}/launch/")
    page.check("#gpu-rtx-5090", force=True)
    page.check("#tpl-test-sshd", force=True)
    page.fill("#storage", "20")
    page.check("input[name=access][value=jupyter]")
    page.fill("#name", "first-run")
    shoot(page, "07-launch")
    page.click("text=Launch instance")
    expect(page.get_by_role("heading", name="first-run")).to_be_visible()
    shoot(page, "08-instance-pending")
    page.evaluate("window.__sameDocument = true")  # survives only if the page never reloads
    expect(page.locator("#live [data-testid=status]")).to_have_text("Running", timeout=SLOW)
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator("#acc-ssh")).to_contain_text("ssh root@127.0.0.1 -p ")

    # Credentials are revealed on request only.
    expect(page.locator("[data-testid=password]")).to_have_count(0)
    page.click("text=Reveal credentials")
    expect(page.locator("[data-testid=password]")).to_be_visible()
    instance = Instance.objects.get(owner__email=email)
    assert len(page.locator("[data-testid=password]").inner_text().strip()) >= 16
    shoot(page, "09-instance-running")
    page.goto(f"{base}/")
    expect(page.locator(f"#row-{instance.public_id} [data-testid=status]")).to_have_text("Running")
    shoot(page, "10-dashboard-running")

    # Stop, start (the dashboard row follows without a reload), destroy.
    page.goto(f"{base}/instances/{instance.public_id}/")
    page.click("button:has-text('Stop')")
    expect(page.locator("#live [data-testid=status]")).to_have_text("Stopped", timeout=SLOW)
    shoot(page, "11-instance-stopped")
    page.click("button:has-text('Start')")
    expect(page.locator("#live [data-testid=status]")).to_have_text("Running", timeout=SLOW)
    page.click("button:has-text('Destroy')")
    expect(page).to_have_url(f"{base}/")
    _wait_for(lambda: Instance.objects.get(pk=instance.pk).status == Instance.Status.TERMINATED, timeout=120)

    # The meter bills what ran; the billing page shows the charge.
    meter_usage.delay()
    try:
        _wait_for(
            lambda: UsageRecord.objects.filter(instance=instance, kind="gpu", cost_usd__isnull=False).count() == 2
        )
    except AssertionError:
        raise AssertionError(
            [(u.kind, u.started_at, u.ended_at, u.cost_usd) for u in UsageRecord.objects.filter(instance=instance)],
            list(instance.events.values_list("kind", "at")),
        ) from None
    page.goto(f"{base}/billing/")
    rows = page.locator(f"#usage tr[data-instance='{instance.public_id}']")
    expect(rows.first).to_be_visible()
    assert rows.count() >= 2  # two running segments (before and after the stop)
    charged = -sum(e.amount_usd for e in LedgerEntry.objects.filter(user=instance.owner, kind="gpu-usage"))
    assert charged >= Decimal("0.04")  # two starts, each at least a minute at $1.49/h
    shoot(page, "12-billing-charged")

    # The same console on a phone.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/launch/")
    shoot(page, "13-launch-phone")
