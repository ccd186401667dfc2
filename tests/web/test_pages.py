from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.urls import reverse
from django.utils import timezone

from instances.models import GpuType, Instance, PortBinding
from tests.api.helpers import token_client
from tests.factories import InstanceFactory, TemplateFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def alices_instance(alice, this_host):
    gpu = this_host.gpus.get(index=0)
    inst = InstanceFactory(
        owner=alice, gpu=gpu, host=this_host, gpu_type=gpu.gpu_type, status=Instance.Status.RUNNING, name="alice-train"
    )
    PortBinding.objects.create(host=this_host, host_port=25022, instance=inst, name="ssh", container_port=22)
    return inst


def test_every_customer_page_answers_for_its_owner(client, alice, alices_instance):
    client.force_login(alice)
    pages = [
        reverse("web:dashboard"),
        reverse("web:launch"),
        reverse("web:instance", args=[alices_instance.public_id]),
        reverse("web:ssh-keys"),
        reverse("web:tokens"),
        reverse("billing-web:billing"),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == HTTPStatus.OK, url
        assert b"GPU Cloud" in response.content


def test_the_dashboard_lists_my_instances_with_status_and_gpu(client, alice, alices_instance):
    client.force_login(alice)
    page = client.get(reverse("web:dashboard")).content.decode()
    assert alices_instance.public_id in page
    assert "alice-train" in page
    assert "badge-running" in page
    assert "RTX 5090" in page
    # The table refreshes itself (HTMX) without a reload.
    assert 'hx-trigger="every 2s"' in page


def test_the_instance_page_shows_access_commands_but_credentials_only_on_request(client, alice, alices_instance):
    client.force_login(alice)
    page = client.get(reverse("web:instance", args=[alices_instance.public_id])).content.decode()
    assert "ssh root@127.0.0.1 -p 25022" in page
    assert "Reveal credentials" in page
    assert 'data-testid="password"' not in page


def test_bob_gets_a_404_for_every_page_and_action_on_alices_instance(client, bob, alices_instance):
    client.force_login(bob)
    pid = alices_instance.public_id
    for url in (reverse("web:instance", args=[pid]), reverse("web:instance-logs", args=[pid])):
        assert client.get(url).status_code == HTTPStatus.NOT_FOUND, url
    for url in (
        reverse("web:instance-credentials", args=[pid]),
        reverse("web:instance-action", args=[pid, "stop"]),
        reverse("web:instance-action", args=[pid, "destroy"]),
    ):
        assert client.post(url).status_code == HTTPStatus.NOT_FOUND, url
    alices_instance.refresh_from_db()
    assert alices_instance.status == Instance.Status.RUNNING
    assert pid not in client.get(reverse("web:dashboard")).content.decode()


def test_a_logged_out_visitor_is_sent_to_the_login_page(client, alices_instance):
    for url in (
        reverse("web:dashboard"),
        reverse("web:launch"),
        reverse("web:instance", args=[alices_instance.public_id]),
        reverse("billing-web:billing"),
        reverse("web:tokens"),
        reverse("web:ssh-keys"),
    ):
        response = client.get(url)
        assert response.status_code == HTTPStatus.FOUND, url
        assert response["Location"].startswith(reverse("account_login")), url


@pytest.mark.parametrize(
    ("min_gpu_memory_mb", "gpu", "code", "words"),
    [
        (0, "no-such-gpu", "instances:unknown-gpu-type", "No such GPU type."),
        (65536, "rtx-5090", "instances:gpu-too-small", "needs 65536 MiB of GPU memory; the RTX 5090 has 32607 MiB"),
    ],
)
def test_a_launch_error_is_shown_in_words_and_creates_nothing(
    client, alice, this_host, min_gpu_memory_mb, gpu, code, words
):
    client.force_login(alice)
    template = TemplateFactory(min_gpu_memory_mb=min_gpu_memory_mb)
    form = {"template": template.slug, "gpu": gpu, "storage": "50", "access": ["ssh"]}
    response = client.post(reverse("web:launch"), form)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert f'data-code="{code}"'.encode() in response.content
    assert words.encode() in response.content
    assert not Instance.objects.filter(owner=alice).exists()


def test_ssh_keys_and_tokens_can_be_added_and_revoked_from_the_pages(client, alice):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    client.force_login(alice)
    public = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    assert (
        client.post(reverse("web:ssh-keys"), {"name": "laptop", "public_key": public}).status_code == HTTPStatus.FOUND
    )
    page = client.get(reverse("web:ssh-keys")).content.decode()
    assert "laptop" in page
    assert "SHA256:" in page
    bad = client.post(reverse("web:ssh-keys"), {"name": "junk", "public_key": "not a key"})
    assert bad.status_code == HTTPStatus.BAD_REQUEST
    assert b"instances:invalid-ssh-key" in bad.content

    created = client.post(reverse("web:tokens"), {"name": "script"}).content.decode()
    assert 'data-testid="new-token"' in created
    token = alice.api_tokens.get(name="script")
    assert client.post(reverse("web:token-revoke", args=[token.id])).status_code == HTTPStatus.FOUND
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_restart_and_start_say_which_keeps_the_gpu(client, alice, alices_instance):
    """One truth with the service: a restart keeps its GPU and ports, a start may not."""
    client.force_login(alice)
    pid = alices_instance.public_id
    page = client.post(reverse("web:instance-action", args=[pid, "restart"]), follow=True).content.decode()
    assert "keeps its GPU and ports" in page
    Instance.objects.filter(pk=alices_instance.pk).update(status=Instance.Status.STOPPED, gpu=None)
    page = client.post(reverse("web:instance-action", args=[pid, "start"]), follow=True).content.decode()
    assert "it may be another one" in page


def test_a_start_during_the_backoff_says_when_to_try_again(client, alice, alices_instance):
    client.force_login(alice)
    Instance.objects.filter(pk=alices_instance.pk).update(
        status=Instance.Status.FAILED,
        gpu=None,
        failed_starts=1,
        start_not_before=timezone.now() + timedelta(seconds=30),
    )
    url = reverse("web:instance-action", args=[alices_instance.public_id, "start"])
    page = client.post(url, follow=True).content.decode()
    assert "its services never answered); try again in 30 s." in page
    assert Instance.objects.get(pk=alices_instance.pk).status == Instance.Status.FAILED


def test_the_launch_page_marks_gpu_types_too_small_for_the_chosen_template(client, alice, this_host):
    client.force_login(alice)
    TemplateFactory(slug="big-model", name="Big model", min_gpu_memory_mb=65536)
    GpuType.objects.filter(sku="rtx-pro-6000").update(memory_mb=97887)
    page = client.get(reverse("web:launch") + "?template=big-model").content.decode()
    assert 'data-min-gpu-memory="65536"' in page
    assert "needs 64 GB GPU memory" in page
    assert 'data-memory="32607"' in page
    assert page.count("too small for Big model") == 2  # both marks; only the RTX 5090's shows
    assert page.count(" hidden>Too little memory") == 1


def test_web_launches_are_throttled_in_the_apis_bucket(client, alice, this_host, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"instance-create": "2/minute"}}
    client.force_login(alice)
    form = {"template": "no-such-template", "gpu": "rtx-5090", "storage": "50", "access": ["ssh"]}
    codes = [client.post(reverse("web:launch"), form).status_code for _ in range(2)]
    assert codes == [HTTPStatus.BAD_REQUEST] * 2
    response = client.post(reverse("web:launch"), {**form, "template": TemplateFactory().slug})
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert b'data-code="throttled"' in response.content
    assert b"Too many launches in a short time. Try again in" in response.content
    assert not Instance.objects.filter(owner=alice).exists()
    # The page itself still answers; only launches are counted.
    assert client.get(reverse("web:launch")).status_code == HTTPStatus.OK


def test_the_web_and_the_api_share_one_launch_bucket_per_user(client, alice, bob, this_host, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"instance-create": "2/minute"}}
    api = token_client(alice)
    assert api.post("/api/gpu/instances", {"template": "x"}, format="json").status_code == HTTPStatus.BAD_REQUEST
    client.force_login(alice)
    form = {"template": "no-such-template", "gpu": "rtx-5090", "storage": "50", "access": ["ssh"]}
    assert client.post(reverse("web:launch"), form).status_code == HTTPStatus.BAD_REQUEST
    assert client.post(reverse("web:launch"), form).status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert api.post("/api/gpu/instances", {"template": "x"}, format="json").status_code == HTTPStatus.TOO_MANY_REQUESTS
    # Another user's bucket is their own.
    client.force_login(bob)
    assert client.post(reverse("web:launch"), form).status_code == HTTPStatus.BAD_REQUEST
