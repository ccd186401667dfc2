"""API tokens: only a session makes them, they can expire (issue 16, part 7)."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from instances import cache as apicache
from instances.access.tokens import token_create
from instances.errors import InvalidTokenExpiry
from instances.models import ApiToken
from tests.processes import wait_until


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_token_cannot_make_a_token(alice, alice_api):
    answer = alice_api.post("/api/gpu/tokens", {"name": "sibling"}, format="json")
    assert answer.status_code == HTTPStatus.FORBIDDEN
    assert answer.json()["error"]["code"] == "instances:token-needs-session"
    assert list(alice.api_tokens.values_list("name", flat=True)) == ["test"]


def test_a_session_makes_a_token_with_an_expiry(alice):
    session = APIClient()
    session.force_login(alice)
    when = timezone.now() + timedelta(days=3)
    made = session.post("/api/gpu/tokens", {"name": "ci", "expires_at": when.isoformat()}, format="json")
    assert made.status_code == HTTPStatus.CREATED, made.content
    assert ApiToken.objects.get(id=made.json()["id"]).expires_at == when
    assert made.json()["expires_at"]
    past = session.post("/api/gpu/tokens", {"expires_at": "2001-01-01T00:00:00Z"}, format="json")
    assert past.json()["error"]["code"] == "instances:invalid-token-expiry"


def test_an_expired_token_fails_like_a_revoked_one(alice):
    token, key = token_create(user=alice, expires_at=timezone.now() + timedelta(hours=1))
    ApiToken.objects.filter(id=token.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    apicache.clear()
    refused = _client(key).get("/api/gpu/tokens")
    assert refused.status_code == HTTPStatus.UNAUTHORIZED
    assert refused.json()["error"]["code"] == "auth:authentication-failed"


def test_the_cached_authentication_does_not_outlive_the_expiry(alice):
    token, key = token_create(user=alice, expires_at=timezone.now() + timedelta(seconds=2))
    client = _client(key)
    for _ in range(3):  # learn the owner, cache, answer from the cache
        assert client.get("/api/gpu/tokens").status_code == HTTPStatus.OK
    # The expiry passes with no write, so no version bump tells the cache.
    wait_until(lambda: timezone.now() > token.expires_at, timeout=10, what="the token's expiry", every=0.1)
    refused = client.get("/api/gpu/tokens")
    assert refused.status_code == HTTPStatus.UNAUTHORIZED
    assert refused.json()["error"]["code"] == "auth:authentication-failed"


def test_an_expired_token_is_not_listed(alice):
    token_create(user=alice, name="old", expires_at=timezone.now() + timedelta(seconds=1))
    ApiToken.objects.filter(name="old").update(expires_at=timezone.now() - timedelta(seconds=1))
    session = APIClient()
    session.force_login(alice)
    assert [t["name"] for t in session.get("/api/gpu/tokens").json()["results"]] == []


def test_the_web_page_and_the_command_set_an_expiry(client, alice, db):
    client.force_login(alice)
    page = client.post(reverse("web:tokens"), {"name": "week", "expires_days": "7"}).content.decode()
    assert 'data-testid="new-token"' in page
    week = alice.api_tokens.get(name="week").expires_at
    assert timedelta(days=6, hours=23) < week - timezone.now() <= timedelta(days=7)
    client.post(reverse("web:tokens"), {"name": "odd", "expires_days": "3"})
    assert not alice.api_tokens.filter(name="odd").exists()
    client.post(reverse("web:tokens"), {"name": "forever", "expires_days": ""})
    assert alice.api_tokens.get(name="forever").expires_at is None
    out = StringIO()
    call_command("create_api_token", "ci-bot", "--expires-days", "30", stdout=out)
    assert "expires" in out.getvalue()
    bot = ApiToken.objects.get(owner__username="ci-bot")
    assert timedelta(days=29) < bot.expires_at - timezone.now() <= timedelta(days=30)


def test_an_expiry_in_the_past_is_refused(alice):
    with pytest.raises(InvalidTokenExpiry):
        token_create(user=alice, expires_at=timezone.now())


PASSWORD = "correct-horse-battery-staple"  # tests.factories.UserFactory's
NEW = "n3w-Pa55word!-long-enough"


def _works(key: str) -> bool:
    apicache.clear()
    return _client(key).get("/api/gpu/tokens").status_code == HTTPStatus.OK


def test_changing_the_password_on_the_account_page_revokes_the_tokens_and_says_so(
    client, alice, mailoutbox, django_capture_on_commit_callbacks
):
    _, key = token_create(user=alice, name="notebook")
    _, other = token_create(user=alice, name="ci")
    assert _works(key)
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        changed = client.post(
            "/accounts/password/change/", {"oldpassword": PASSWORD, "password1": NEW, "password2": NEW}, follow=True
        )
    assert changed.status_code == HTTPStatus.OK
    assert not _works(key)
    assert not _works(other)
    assert not alice.api_tokens.filter(revoked_at__isnull=True).exists()
    assert "API tokens were revoked" in changed.content.decode()
    (mail,) = [m for m in mailoutbox if "API tokens revoked" in m.subject]
    assert mail.to == ["alice@example.com"]
    assert "2 API tokens" in mail.body


def test_the_admins_password_change_revokes_the_tokens(
    client, alice, olga, mailoutbox, django_capture_on_commit_callbacks
):
    _, key = token_create(user=alice)
    client.force_login(olga)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            reverse("admin:auth_user_password_change", args=[alice.pk]),
            {"password1": NEW, "password2": NEW, "usable_password": "true"},
        )
    assert answer.status_code == HTTPStatus.FOUND, answer.content[:2000]
    alice.refresh_from_db()
    assert alice.check_password(NEW)
    assert not _works(key)
    assert any("API tokens revoked" in m.subject for m in mailoutbox)


def test_set_password_anywhere_revokes_but_other_saves_do_not(alice):
    _, key = token_create(user=alice)
    alice.first_name = "Alice"
    alice.save()
    alice.save(update_fields=["last_login"])
    assert _works(key)
    alice.set_password(NEW)
    alice.save()
    assert not _works(key)
    _, fresh = token_create(user=alice, name="after")
    assert _works(fresh)  # tokens made after the change work
