"""Hostile bodies on every write route, and webhooks with bad signatures: refused, nothing changed.

The write routes are read from the live OpenAPI schema (served by pytest-django's
live_server on the test database); schemathesis makes the schema-violating bodies
(wrong types, missing fields, bad values) with hypothesis, and we add malformed JSON,
non-object JSON and oversized bodies by hand. Every answer must be a 4xx in the one
error shape, and the database must hold exactly the rows it held before.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from http import HTTPStatus

import pytest
import requests
import schemathesis
from django.db.models import Q
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core import NotSet

from billing.models import BillingAccount, LedgerEntry
from instances import services
from instances.access.sshkeys import sshkey_create
from instances.access.tokens import token_create
from instances.models import ApiToken, Instance, InstanceEvent, PortBinding, SSHKey
from tests.api.keygen import ed25519_pub
from tests.billing.helpers import event_payload, payment_intent, sign, webhook_path
from tests.factories import GpuFactory, GpuTypeFactory, HostFactory, TemplateFactory, UserFactory

EXAMPLES = 25
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def counts() -> dict[str, object]:
    """Everything a write could change."""
    from djstripe.models import Event

    return {
        "instances": list(Instance.objects.order_by("pk").values_list("pk", "status", "updated_at")),
        "events": InstanceEvent.objects.count(),
        "ports": PortBinding.objects.count(),
        "ssh keys": SSHKey.objects.count(),
        "tokens": list(ApiToken.objects.order_by("pk").values_list("pk", "revoked_at")),
        "ledger": LedgerEntry.objects.count(),
        "billing accounts": BillingAccount.objects.filter(~Q(stripe_customer_id="")).count(),
        "stripe events": Event.objects.count(),
    }


@pytest.fixture
def world(transactional_db, tenant_host, settings) -> Iterator[str]:
    """A user with an instance, a key and a token (the targets of the id routes)."""
    # Throttles would answer 429 to the burst; Stripe unreachable, so a body that got
    # through to a top-up would show as a 502 rather than quietly make a customer.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    settings.STRIPE_API_HOST = "http://127.0.0.1:9"
    user = UserFactory(username="hostile")
    TemplateFactory()
    TemplateFactory(slug="pytorch", name="PyTorch", image="gpucloud-test/absent:none")
    # On a host of its own whose queue no worker consumes: the instance stays `pending`,
    # so a session worker left running by an earlier suite cannot move it mid-test.
    idle = HostFactory(name=f"{tenant_host.name}-idle")
    GpuFactory(host=idle, index=0, gpu_type=GpuTypeFactory(sku="idle-gpu", display_name="Idle GPU"))
    services.instance_launch(user=user, template="test-sshd", gpu_type="idle-gpu", storage_gb=20, access=["ssh"])
    sshkey_create(user=user, public_key=ed25519_pub("hostile"))
    _, key = token_create(user=user, name="hostile")
    return key


def _error_shaped(response: requests.Response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error.get("code"), str) and isinstance(error.get("message"), str) and "detail" in error


def test_schema_violating_bodies_on_every_write_route_are_refused_and_change_nothing(live_server, world):
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/", timeout=30)
    operations = [
        r.ok()
        for r in schema.get_all_operations()
        if r.ok().method.upper() in WRITE_METHODS and r.ok().path.startswith(("/api/gpu/", "/api/billing/"))
    ]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /api/gpu/instances",
        "POST /api/gpu/ssh-keys",
        "POST /api/gpu/tokens",
        "POST /api/billing/topups",
    }
    failures: list[str] = []
    tried = 0

    def fuzz(operation) -> None:
        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @hypothesis_settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def run(case) -> None:
            nonlocal tried
            # A case with `wait` would hold the request for up to 20 s, and dropping the
            # parameter may drop the very violation the case was made for (then a valid
            # launch answers 202): such cases are left out; tests/api covers `wait` itself.
            if case.query and "wait" in case.query:
                return
            # Likewise a case whose violation is its Authorization header: the call below
            # authenticates as the world's customer, which replaces it.
            if case.headers and "Authorization" in case.headers:
                return
            # JSON bodies only: form and multipart encodings turn any value into text, so
            # "wrong types" do not exist there. A missing body is tried by hand below (the
            # token route rightly takes none: every field of it is optional).
            if isinstance(case.body, NotSet) or (case.media_type and case.media_type != "application/json"):
                return
            before = counts()
            response = case.call(headers={"Authorization": f"Token {world}"}, timeout=60)
            tried += 1
            body = case.body if not isinstance(case.body, bytes) else case.body[:80]
            where = f"{operation.method.upper()} {case.formatted_path} query={case.query} headers={case.headers} {str(body)[:200]}"
            if not 400 <= response.status_code < 500:
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            elif not _error_shaped(response):
                failures.append(f"{where}: not the error shape: {response.text[:200]}")
            after = counts()
            if after != before:
                changed = [k for k in before if before[k] != after[k]]
                failures.append(f"{where}: {response.status_code} changed {changed}")

        with contextlib.suppress(Unsatisfiable):  # a route with nothing to violate (a free-form id, no body)
            run()

    for operation in operations:
        fuzz(operation)
    assert tried > 50
    assert not failures, "\n".join(failures[:40])


def test_malformed_non_object_and_oversized_bodies_are_refused_and_change_nothing(live_server, world):
    from django.conf import settings

    routes = ["/api/gpu/instances", "/api/gpu/ssh-keys", "/api/gpu/tokens", "/api/billing/topups"]
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    bodies = {
        "malformed JSON": b'{"template": "test-sshd", "gpu": ',
        "not UTF-8": b'{"name": "\xff\xfe"}',
        "a JSON list": b"[1, 2, 3]",
        "a JSON string": b'"hello"',
        "JSON null": b"null",
        "NaN": b'{"storage": NaN, "amount_usd": NaN, "name": NaN}',
        "deep nesting": b"[" * 5000 + b"]" * 5000,
        "oversized": json.dumps({"name": "x" * (limit + 1), "public_key": "y" * (limit + 1)}).encode(),
    }
    failures = []
    headers = {"Authorization": f"Token {world}", "Content-Type": "application/json"}
    for route in routes:
        for what, body in bodies.items():
            before = counts()
            response = requests.post(f"{live_server.url}{route}", data=body, headers=headers, timeout=60)
            if not 400 <= response.status_code < 500 or not _error_shaped(response):
                failures.append(f"{route} {what}: {response.status_code} {response.text[:200]}")
            if counts() != before:
                failures.append(f"{route} {what}: rows changed")
    # A form-encoded or text body where JSON is expected: 415 in the error shape too (on
    # a route a token may write to: the token route refuses tokens before any parsing).
    response = requests.post(
        f"{live_server.url}/api/gpu/ssh-keys",
        data="name=x",
        headers={"Authorization": f"Token {world}", "Content-Type": "text/plain"},
        timeout=30,
    )
    if response.status_code != HTTPStatus.UNSUPPORTED_MEDIA_TYPE or not _error_shaped(response):
        failures.append(f"text/plain: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "signature",
    ["missing", "garbage", "wrong secret", "stale", "tampered body", "v0 scheme only", "empty v1"],
)
def test_a_webhook_with_a_bad_missing_or_stale_signature_is_a_400_and_changes_nothing(
    client, alice, webhook_endpoint, signature
):
    from djstripe.models import Event, WebhookEventTrigger

    body = event_payload(
        "payment_intent.succeeded", payment_intent(pi_id=f"pi_bad_{signature[:5]}", user_id=alice.pk, amount_cents=5000)
    )
    now = int(time.time())
    headers = {
        "missing": None,
        "garbage": "not a signature",
        "wrong secret": sign(body, secret="whsec_somebody_else_0123456789"),
        "stale": sign(body, timestamp=now - 3600),  # an hour old: a replay
        "tampered body": sign(body.replace("5000", "500000")),
        "v0 scheme only": sign(body).replace("v1=", "v0="),
        "empty v1": f"t={now},v1=",
    }
    header = headers[signature]
    before = counts()
    extra = {"HTTP_STRIPE_SIGNATURE": header} if header is not None else {}
    response = client.post(webhook_path(webhook_endpoint), data=body, content_type="application/json", **extra)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert counts() == before
    assert not LedgerEntry.objects.exists()
    assert not Event.objects.exists()
    # dj-stripe keeps the refused request as an invalid, unprocessed trigger (an audit trail).
    assert not WebhookEventTrigger.objects.filter(Q(valid=True) | Q(processed=True)).exists()
    # Control: the same body, signed now with the endpoint's secret, is credited.
    good = client.post(
        webhook_path(webhook_endpoint), data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(body)
    )
    assert good.status_code == HTTPStatus.OK
    assert LedgerEntry.objects.get(user=alice).amount_usd == 50
