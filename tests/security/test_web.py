"""The web and API surface: CSRF on session writes, failed-login throttles, secrets at rest."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from billing.models import LedgerEntry
from instances import services
from instances.access.crypto import decrypt
from instances.access.sshkeys import sshkey_create
from instances.access.tokens import token_create
from instances.models import ApiToken, Instance, InstanceEvent, PortBinding, SSHKey
from tests.api.keygen import ed25519_pub
from tests.factories import TemplateFactory

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery-staple"  # tests.factories.UserFactory's


@pytest.fixture
def alices_things(alice, tenant_host):
    TemplateFactory()
    instance = services.instance_launch(user=alice, template="test-sshd", gpu_type="rtx-5090", storage_gb=20, access=[])
    Instance.objects.filter(pk=instance.pk).update(status="running")
    key = sshkey_create(user=alice, public_key=ed25519_pub("alice"))
    token, _ = token_create(user=alice, name="alice's")
    return instance, key, token


def _state() -> tuple:
    return (
        list(Instance.objects.values_list("id", "status", "updated_at")),
        InstanceEvent.objects.count(),
        PortBinding.objects.count(),
        list(SSHKey.objects.values_list("id", "name")),
        list(ApiToken.objects.values_list("id", "revoked_at")),
        LedgerEntry.objects.count(),
    )


def test_every_session_write_needs_the_csrf_token(alice, alices_things):
    instance, key, token = alices_things
    base = f"/api/gpu/instances/{instance.public_id}"
    api_writes = [
        ("post", "/api/gpu/instances", {"template": "test-sshd", "gpu": "rtx-5090", "storage": 20}),
        ("delete", base, None),
        ("post", f"{base}/stop", None),
        ("post", f"{base}/start", None),
        ("post", f"{base}/restart", None),
        ("post", "/api/gpu/ssh-keys", {"public_key": ed25519_pub("csrf")}),
        ("delete", f"/api/gpu/ssh-keys/{key.id}", None),
        ("delete", f"/api/gpu/ssh-keys?id={key.id}", None),
        ("post", "/api/gpu/tokens", {"name": "csrf"}),
        ("delete", f"/api/gpu/tokens/{token.id}", None),
        ("post", "/api/billing/topups", {"amount_usd": "20.00"}),
    ]
    web_forms = [
        ("/launch/", {"template": "test-sshd", "gpu": "rtx-5090", "storage": "20"}),
        *[(f"/instances/{instance.public_id}/{action}/", {}) for action in ("stop", "start", "restart", "destroy")],
        ("/ssh-keys/", {"name": "csrf", "public_key": ed25519_pub("csrf-web")}),
        (f"/ssh-keys/{key.id}/delete/", {}),
        ("/tokens/", {"name": "csrf"}),
        (f"/tokens/{token.id}/revoke/", {}),
        ("/billing/topup/", {"amount_usd": "20"}),
        ("/billing/topup/pi_123/pay/", {"payment_method": "pm_card_visa"}),
        ("/accounts/password/change/", {"oldpassword": PASSWORD, "password1": "n3w-Pa55word!", "password2": "n3w-Pa55word!"}),
        ("/accounts/email/", {"email": "evil@example.com", "action_add": ""}),
        ("/accounts/logout/", {}),
    ]  # fmt: skip
    before = _state()
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(alice)
    for method, path, body in api_writes:
        response = getattr(api, method)(path, body, format="json")
        assert response.status_code == HTTPStatus.FORBIDDEN, (method, path, response.status_code)
        error = response.json()["error"]
        assert error["code"] == "auth:permission-denied", path
        assert "CSRF" in error["message"], path
    web = Client(enforce_csrf_checks=True)
    web.force_login(alice)
    for path, form in web_forms:
        response = web.post(path, form)
        assert response.status_code == HTTPStatus.FORBIDDEN, (path, response.status_code)
    assert _state() == before
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)
    assert alice.emailaddress_set.filter(email="evil@example.com").count() == 0
    # The login form too: a login without the token is refused.
    assert Client(enforce_csrf_checks=True).post("/accounts/login/", {"login": alice.email, "password": PASSWORD}).status_code == 403  # fmt: skip

    # Control: the same session with its token gets through.
    page = web.get("/tokens/")
    csrf = page.cookies["csrftoken"].value
    api.cookies["csrftoken"] = csrf
    created = api.post("/api/gpu/tokens", {"name": "with-csrf"}, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert created.status_code == HTTPStatus.CREATED
    # API tokens need no CSRF token (no cookie rides along with them); they cannot make
    # tokens, but they get past CSRF to be told so.
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {created.json()['key']}")
    by_token = client.post("/api/gpu/tokens", {"name": "by-token"}, format="json")
    assert by_token.status_code == HTTPStatus.FORBIDDEN
    assert by_token.json()["error"]["code"] == "instances:token-needs-session"
    assert client.delete(f"/api/gpu/tokens/{created.json()['id']}").status_code == HTTPStatus.NO_CONTENT


def _login(client: Client, email: str, password: str):
    return client.post("/accounts/login/", {"login": email, "password": password})


def test_failed_logins_are_throttled_per_account_even_for_the_right_password(alice, settings):
    from allauth.account.models import EmailAddress

    EmailAddress.objects.create(user=alice, email=alice.email, verified=True, primary=True)
    assert _login(Client(), alice.email, PASSWORD).status_code == HTTPStatus.FOUND  # control: it works
    for attempt in range(5):  # "5/5m/key": five wrong guesses at one account…
        response = _login(Client(REMOTE_ADDR=f"10.0.0.{attempt}"), alice.email, "wrong-password")
        assert response.status_code == HTTPStatus.OK, attempt
        assert b"not correct" in response.content or b"incorrect" in response.content.lower()
    # …and the account refuses logins, the right password included, from any address.
    locked = _login(Client(REMOTE_ADDR="10.0.1.1"), alice.email, PASSWORD)
    assert locked.status_code != HTTPStatus.FOUND
    assert b"Too many failed login attempts" in locked.content
    assert "_auth_user_id" not in locked.wsgi_request.session


def test_failed_logins_are_throttled_per_address(bob):
    # "10/m/ip": guesses spread over accounts from one address.
    client = Client(REMOTE_ADDR="10.9.9.9")
    answers = [_login(client, f"nobody{i}@example.com", "wrong") for i in range(11)]
    assert [a.status_code for a in answers] == [HTTPStatus.OK] * 11
    assert not any(b"Too many failed login attempts" in a.content for a in answers[:10])
    assert b"Too many failed login attempts" in answers[10].content
    # An account never guessed at is refused from that address too, right password or not.
    from allauth.account.models import EmailAddress

    EmailAddress.objects.create(user=bob, email=bob.email, verified=True, primary=True)
    assert b"Too many failed login attempts" in _login(client, bob.email, PASSWORD).content
    assert _login(Client(REMOTE_ADDR="10.9.9.10"), bob.email, PASSWORD).status_code == HTTPStatus.FOUND


def test_the_api_throttles_failed_token_authentications(alice, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "auth-failure": "5/minute"},
    }
    _, key = token_create(user=alice, name="real")
    client = APIClient(REMOTE_ADDR="10.7.7.7")
    for _ in range(5):
        client.credentials(HTTP_AUTHORIZATION="Token guessed-" + os.urandom(8).hex())
        assert client.get("/api/gpu/instances").status_code == HTTPStatus.UNAUTHORIZED
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")  # even the right key waits now
    throttled = client.get("/api/gpu/instances")
    assert throttled.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert throttled.json()["error"]["code"] == "throttled"
    assert int(throttled["Retry-After"]) > 0
    # Another address is not held up.
    other = APIClient(REMOTE_ADDR="10.7.7.8")
    other.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert other.get("/api/gpu/instances").status_code == HTTPStatus.OK


def _row(table: str, pk: int) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [pk])  # noqa: S608 - our own table names
        names = [c.name for c in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


def test_api_tokens_are_stored_as_their_sha256_only(alice):
    token, key = token_create(user=alice, name="raw")
    row = _row("instances_apitoken", token.pk)
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert not any(key in str(value) for value in row.values())
    assert not any(key[len(token.prefix) :] in str(value) for value in row.values())


def test_instance_credentials_are_encrypted_with_the_key_from_the_environment(alice, tenant_host, settings):
    key = Fernet.generate_key().decode()
    settings.GPUCLOUD_ENCRYPTION_KEY = key
    TemplateFactory()
    instance = services.instance_launch(user=alice, template="test-sshd", gpu_type="rtx-5090", storage_gb=20, access=[])
    password, token = decrypt(instance.password_encrypted), decrypt(instance.access_token_encrypted)
    assert len(password) >= 16
    assert len(token) >= 16
    row = _row("instances_instance", instance.pk)
    for secret in (password, token):
        assert not any(secret in str(value) for value in row.values())
    # The stored values open with exactly that key, and with no other.
    assert Fernet(key.encode()).decrypt(row["password_encrypted"].encode()).decode() == password
    assert Fernet(key.encode()).decrypt(row["access_token_encrypted"].encode()).decode() == token
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(row["password_encrypted"].encode())
    # The events and the API's other users never see them either.
    for event in InstanceEvent.objects.filter(instance=instance):
        assert password not in f"{event.message}{event.data}"


def test_production_settings_pass_the_deploy_checks_and_refuse_without_the_encryption_key():
    # Playwright's pytest plugin sets DJANGO_ALLOW_ASYNC_UNSAFE in this process; no
    # production environment has it (check --deploy refuses it).
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DEBUG": "0",
        "SECRET_KEY": "k3y-" + "z9y8x7w6v5u4t3s2" * 4,
        "GPUCLOUD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "gpucloud.example.com",
    }
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    settings_dump = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; "
         "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS)"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "gpucloud.settings"}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert settings_dump.stdout.split() == ["True", "True", "True", "31536000"], settings_dump.stderr
    without = {k: v for k, v in env.items() if k != "GPUCLOUD_ENCRYPTION_KEY"}
    refused = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=without, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "GPUCLOUD_ENCRYPTION_KEY is not set" in refused.stderr


@pytest.mark.parametrize("login_page", ["/admin/login/", "/api-auth/login/"])
def test_djangos_own_login_pages_share_the_failed_login_limits(olga, login_page):
    """The admin's and the browsable API's login pages (username and password, Django's
    forms) were unthrottled: instances.access.backends.ThrottledModelBackend charges allauth's limits."""

    def login(address: str, password: str):
        client = Client(REMOTE_ADDR=address)
        response = client.post(login_page, {"username": olga.username, "password": password})
        return response, "_auth_user_id" in client.session

    assert login("10.5.0.1", PASSWORD)[1]  # control: the right password works, and costs nothing
    for attempt in range(5):
        response, logged_in = login(f"10.5.1.{attempt}", "wrong-password")
        assert response.status_code == HTTPStatus.OK
        assert not logged_in
    # The username's budget is spent: the right password is refused too, from anywhere.
    assert not login("10.5.2.1", PASSWORD)[1]
