from __future__ import annotations

import io
from decimal import Decimal
from http import HTTPStatus

from django.core.management import call_command

from billing import selectors
from tests.billing.helpers import event_payload, payment_intent, sign


def test_the_registered_endpoint_verifies_webhooks(client, alice, monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_from_the_dashboard")
    out = io.StringIO()
    call_command("stripe_webhook_endpoint", "--id", "we_live1", "--base-url", "https://gpu.example.com/", stdout=out)
    url = out.getvalue().strip().splitlines()[-1]
    assert url.startswith("https://gpu.example.com/stripe/webhook/")
    assert "whsec_from_the_dashboard" not in out.getvalue()
    call_command("stripe_webhook_endpoint", "--id", "we_live1", "--base-url", "https://gpu.example.com", stdout=out)

    path = url.removeprefix("https://gpu.example.com")
    body = event_payload(
        "payment_intent.succeeded", payment_intent(pi_id="pi_cmd", user_id=alice.pk, amount_cents=1000)
    )
    signature = sign(body, secret="whsec_from_the_dashboard")
    assert client.post(path, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature).status_code == (
        HTTPStatus.OK
    )
    assert selectors.balance_get(user=alice) == Decimal("10.00")
