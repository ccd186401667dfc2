"""API tokens (hashed, named, listable, revocable), session login, and auth throttling."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from http import HTTPStatus
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from instances import cache as apicache
from instances.access.tokens import token_create, token_hash
from instances.models import ApiToken


def _client(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def test_tokens_are_stored_as_sha256_only(alice):
    token, key = token_create(user=alice, name="laptop")
    row = ApiToken.objects.get(id=token.id)
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in {row.key_hash, row.prefix, row.name}
    assert key.startswith(row.prefix)
    assert len(key) > 40


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "token", "bearer"])
def test_token_and_bearer_both_authenticate(alice, scheme):
    _, key = token_create(user=alice)
    response = _client(f"{scheme} {key}").get("/api/gpu/ssh-keys")
    assert response.status_code == HTTPStatus.OK


def test_no_credentials_is_a_401_in_the_error_shape():
    response = APIClient().get("/api/gpu/ssh-keys")
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "auth:not-authenticated"


@pytest.mark.parametrize("header", ["Token nope", "Bearer", "Token a b", "Token gpc_\u00e9"])
def test_a_bad_token_is_a_401(alice, header):
    response = _client(header).get("/api/gpu/ssh-keys")
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json()["error"]["code"] == "auth:authentication-failed"


def test_a_revoked_token_stops_working_at_once(alice):
    token, key = token_create(user=alice)
    client = _client(f"Token {key}")
    assert client.get("/api/gpu/tokens").status_code == HTTPStatus.OK
    assert client.delete(f"/api/gpu/tokens/{token.id}").status_code == HTTPStatus.NO_CONTENT
    assert ApiToken.objects.get(id=token.id).revoked_at is not None
    assert client.get("/api/gpu/tokens").status_code == HTTPStatus.UNAUTHORIZED


def test_an_inactive_users_token_is_refused(alice):
    _, key = token_create(user=alice)
    alice.is_active = False
    alice.save()
    assert _client(f"Token {key}").get("/api/gpu/tokens").status_code == HTTPStatus.UNAUTHORIZED


def test_tokens_are_made_listed_and_revoked_by_their_owner_only(alice, alice_api, bob_api, bob):
    session = APIClient()  # the browsable API: only a signed-in session makes tokens
    session.force_login(alice)
    created = session.post("/api/gpu/tokens", {"name": "notebook"}, format="json")
    assert created.status_code == HTTPStatus.CREATED
    body = created.json()
    assert body["key"].startswith(body["prefix"])
    # Shown once: the list never has the key.
    listed = alice_api.get("/api/gpu/tokens").json()["results"]
    assert {t["name"] for t in listed} == {"test", "notebook"}
    assert all("key" not in t for t in listed)
    # The new key works.
    assert _client(f"Token {body['key']}").get("/api/gpu/tokens").status_code == HTTPStatus.OK
    # Bob can neither see nor revoke it.
    assert {t["name"] for t in bob_api.get("/api/gpu/tokens").json()["results"]} == {"test"}
    assert bob_api.delete(f"/api/gpu/tokens/{body['id']}").status_code == HTTPStatus.NOT_FOUND
    assert ApiToken.objects.get(id=body["id"]).revoked_at is None


def test_last_used_at_moves_at_most_once_a_minute(alice):
    token, key = token_create(user=alice)
    client = _client(f"Token {key}")
    client.get("/api/gpu/tokens")
    first = ApiToken.objects.get(id=token.id).last_used_at
    assert first is not None
    client.get("/api/gpu/tokens")
    assert ApiToken.objects.get(id=token.id).last_used_at == first
    ApiToken.objects.filter(id=token.id).update(last_used_at=first - timedelta(seconds=61))
    apicache.clear()  # from the database: the stored time says a minute has passed
    client.get("/api/gpu/tokens")
    second = ApiToken.objects.get(id=token.id).last_used_at
    assert second > first


def test_last_used_at_moves_when_the_token_is_answered_from_the_cache(alice):
    token, key = token_create(user=alice)
    client = _client(f"Token {key}")
    for _ in range(3):  # learn the owner, cache, answer from the cache
        assert client.get("/api/gpu/tokens").status_code == HTTPStatus.OK
    first = ApiToken.objects.get(id=token.id).last_used_at
    ApiToken.objects.filter(id=token.id).update(last_used_at=first - timedelta(seconds=61))
    assert client.get("/api/gpu/tokens").status_code == HTTPStatus.OK  # touched 0 s ago here
    assert ApiToken.objects.get(id=token.id).last_used_at == first - timedelta(seconds=61)
    apicache.token_touched(token_hash(key), time.monotonic() - 61)  # this process touched it a minute ago
    assert client.get("/api/gpu/tokens").status_code == HTTPStatus.OK
    assert ApiToken.objects.get(id=token.id).last_used_at > first


def test_repeated_bad_tokens_are_throttled_with_retry_after(alice, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"auth-failure": "3/minute"}}
    client = _client("Token wrong")
    assert [client.get("/api/gpu/tokens").status_code for _ in range(3)] == [HTTPStatus.UNAUTHORIZED] * 3
    response = client.get("/api/gpu/tokens")
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert 1 <= int(response["Retry-After"]) <= 61
    error = response.json()["error"]
    assert error["code"] == "throttled"
    assert error["detail"]["retry_after_seconds"] >= 1
    # Even a good key from that address waits: guessing must not tell which key is right.
    _, key = token_create(user=alice)
    assert _client(f"Token {key}").get("/api/gpu/tokens").status_code == HTTPStatus.TOO_MANY_REQUESTS


def test_create_api_token_creates_the_user_and_prints_the_token_last(db):
    out = StringIO()
    call_command("create_api_token", "ci-bot", "--staff", stdout=out)
    last = out.getvalue().strip().splitlines()[-1]
    user = get_user_model().objects.get(username="ci-bot")
    assert user.is_staff
    assert not user.has_usable_password()
    assert ApiToken.objects.get(owner=user).key_hash == hashlib.sha256(last.encode()).hexdigest()
    assert _client(f"Token {last}").get("/api/gpu/templates").status_code == HTTPStatus.OK
    # Again for an existing user: a second, different token.
    out2 = StringIO()
    call_command("create_api_token", "ci-bot", stdout=out2)
    assert out2.getvalue().strip().splitlines()[-1] != last
    assert ApiToken.objects.filter(owner=user).count() == 2


def test_a_session_needs_csrf_for_writes_and_the_browsable_api_works(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get("/api/gpu/ssh-keys", HTTP_ACCEPT="text/html")
    assert page.status_code == HTTPStatus.OK
    assert b"Ssh Key List" in page.content or b"ssh-keys" in page.content
    response = client.post("/api/gpu/tokens", {"name": "x"}, format="json")
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert "CSRF" in response.json()["error"]["message"]
    assert not ApiToken.objects.filter(owner=alice).exists()


def test_the_browsable_api_login_page_is_served():
    assert APIClient().get("/api-auth/login/").status_code == HTTPStatus.OK


def test_the_browsable_api_renders_every_customer_page(alice, this_host):
    from instances import services
    from tests.factories import TemplateFactory

    TemplateFactory()
    instance = services.instance_launch(
        user=alice, template="test-sshd", gpu_type="rtx-5090", storage_gb=20, access=["ssh"]
    )
    client = APIClient()
    client.force_login(alice)
    for path in (
        "/api/gpu/instances",
        f"/api/gpu/instances/{instance.public_id}",
        f"/api/gpu/instances/{instance.public_id}/events",
        "/api/gpu/availability",
        "/api/gpu/templates",
        "/api/gpu/tokens",
    ):
        page = client.get(path, HTTP_ACCEPT="text/html")
        assert page.status_code == HTTPStatus.OK, path
        assert page["Content-Type"].startswith("text/html"), path
    assert instance.public_id.encode() in client.get("/api/gpu/instances", HTTP_ACCEPT="text/html").content
