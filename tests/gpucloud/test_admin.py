from __future__ import annotations

import json
from http import HTTPStatus

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse

from instances.access.sshkeys import sshkey_create
from instances.access.tokens import token_authenticate, token_create
from instances.models import Host, Instance, InstanceEvent, PortBinding, SSHKey
from instances.services import instance_launch
from templates_app.models import Template
from templates_app.validation import TEMPLATE_FIELDS
from tests.api.keygen import ed25519_pub
from tests.factories import GpuFactory, HostFactory, InstanceFactory, TemplateFactory, UserFactory
from tests.processes import wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def some_of_everything(alice, this_host):
    gpu = this_host.gpus.get(index=0)
    inst = InstanceFactory(owner=alice, gpu=gpu, host=this_host, gpu_type=gpu.gpu_type, status=Instance.Status.RUNNING)
    PortBinding.objects.create(host=this_host, host_port=20022, instance=inst, name="ssh", container_port=22)
    InstanceEvent.objects.create(instance=inst, at=inst.created_at, kind="created", source="user", actor=alice)
    return inst


def _our_models():
    return [m for m in admin.site._registry if m._meta.app_label not in ("djstripe",)]


def test_every_admin_changelist_and_change_page_answers_for_an_operator(client, olga, some_of_everything):
    client.force_login(olga)
    checked = 0
    for model in admin.site._registry:
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert client.get(url).status_code == HTTPStatus.OK, url
        obj = model._default_manager.first()
        if obj is not None:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
            assert client.get(change).status_code == HTTPStatus.OK, change
            checked += 1
    assert checked >= 8  # at least our own models with rows


def test_admin_pages_redirect_a_customer_to_the_login(client, alice, some_of_everything):
    client.force_login(alice)
    for model in _our_models():
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        response = client.get(url)
        assert response.status_code == HTTPStatus.FOUND, url
        assert response["Location"].startswith(reverse("admin:login"))


def test_the_gpu_overview_shows_who_holds_each_gpu_and_which_are_simulated(client, olga, some_of_everything):
    client.force_login(olga)
    page = client.get(reverse("admin:instances_gpu_changelist")).content.decode()
    assert some_of_everything.public_id in page
    assert "alice" in page
    assert "— free —" in page  # the second GPU
    assert "simulated" in page

    busy = client.get(reverse("admin:instances_gpu_changelist") + "?busy=yes").content.decode()
    assert "gpu0 (" in busy
    assert "gpu1 (" not in busy
    assert "— free —" not in busy


def test_the_gpu_overview_runs_a_constant_number_of_queries(client, olga, this_host, django_assert_max_num_queries):
    for index in range(2, 12):
        GpuFactory(host=this_host, index=index)
    client.force_login(olga)
    with django_assert_max_num_queries(12):
        assert client.get(reverse("admin:instances_gpu_changelist")).status_code == HTTPStatus.OK


# -- the operator's lifecycle controls (instances.admin_lifecycle) -------------------------
CHANGELIST = "admin:instances_instance_changelist"


def running(owner, host, index: int) -> Instance:
    gpu = host.gpus.get(index=index)
    return InstanceFactory(owner=owner, gpu=gpu, host=host, gpu_type=gpu.gpu_type, status=Instance.Status.RUNNING)


def act(client, action: str, *instances: Instance, **extra):
    """Post a changelist action as the admin's form does, following to the page shown."""
    data = {"action": action, ACTION_CHECKBOX_NAME: [i.pk for i in instances], "index": 0, **extra}
    return client.post(reverse(CHANGELIST), data, follow=True)


def operator_events(instance: Instance, kind: str) -> list[InstanceEvent]:
    return list(instance.events.filter(kind=kind, source=InstanceEvent.Source.OPERATOR))


def page_messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_an_operator_stops_and_starts_several_instances_from_the_changelist(client, olga, alice, bob, this_host):
    mine, theirs = running(alice, this_host, 0), running(bob, this_host, 1)
    client.force_login(olga)

    response = act(client, "stop_instances", mine, theirs)
    assert response.status_code == HTTPStatus.OK
    for instance in (mine, theirs):
        instance.refresh_from_db()
        assert instance.status == Instance.Status.STOPPING
        (event,) = operator_events(instance, InstanceEvent.Kind.STOP_REQUESTED)
        assert (event.actor, event.message) == (olga, "stopped by an operator in the admin")
    assert any(mine.public_id in m and theirs.public_id in m for m in page_messages(response))

    # As the worker would have finished the stop: the GPU released.
    Instance.objects.filter(pk__in=[mine.pk, theirs.pk]).update(status=Instance.Status.STOPPED, gpu=None)
    act(client, "start_instances", mine, theirs)
    for instance in (mine, theirs):
        instance.refresh_from_db()
        assert instance.status == Instance.Status.STARTING
        assert instance.gpu is not None
        (event,) = operator_events(instance, InstanceEvent.Kind.START_REQUESTED)
        assert event.actor == olga


def test_a_refused_instance_is_reported_and_the_others_still_go(client, olga, alice, this_host):
    going = running(alice, this_host, 0)
    stopped = InstanceFactory(owner=alice, host=this_host, status=Instance.Status.STOPPED)
    client.force_login(olga)

    response = act(client, "restart_instances", going, stopped)

    assert response.status_code == HTTPStatus.OK
    going.refresh_from_db()
    stopped.refresh_from_db()
    assert going.status == Instance.Status.STARTING
    assert going.gpu == this_host.gpus.get(index=0)  # a restart keeps its GPU
    assert operator_events(going, InstanceEvent.Kind.RESTART_REQUESTED)[0].actor == olga
    assert stopped.status == Instance.Status.STOPPED
    assert not stopped.events.exists()
    shown = page_messages(response)
    assert f"{stopped.public_id}: Cannot restart an instance that is stopped." in shown
    assert any(going.public_id in m and "Restarting 1" in m for m in shown)


def test_destroy_from_the_changelist_asks_first(client, olga, alice, this_host):
    instance = running(alice, this_host, 0)
    client.force_login(olga)

    asked = act(client, "destroy_instances", instance)
    assert asked.status_code == HTTPStatus.OK
    assert "Are you sure you want to destroy" in asked.content.decode()
    assert instance.public_id in asked.content.decode()
    instance.refresh_from_db()
    assert instance.status == Instance.Status.RUNNING

    act(client, "destroy_instances", instance, confirmed="yes", reason="abuse report #12")
    instance.refresh_from_db()
    assert instance.status == Instance.Status.TERMINATING
    (event,) = operator_events(instance, InstanceEvent.Kind.DESTROY_REQUESTED)
    assert (event.actor, event.message) == (olga, "abuse report #12")


def test_the_instance_page_has_buttons_that_act_as_the_operator(client, olga, alice, this_host):
    instance = running(alice, this_host, 0)
    client.force_login(olga)
    change = reverse("admin:instances_instance_change", args=[instance.pk])
    url = lambda op: reverse("admin:instances_instance_lifecycle", args=[instance.pk, op])  # noqa: E731

    page = client.get(change).content.decode()
    for op in ("restart", "stop", "destroy"):
        assert url(op) in page
    assert url("start") not in page

    response = client.post(url("stop"))
    assert (response.status_code, response["Location"]) == (HTTPStatus.FOUND, change)
    instance.refresh_from_db()
    assert instance.status == Instance.Status.STOPPING
    assert operator_events(instance, InstanceEvent.Kind.STOP_REQUESTED)[0].actor == olga

    refused = client.post(url("restart"), follow=True)
    assert refused.status_code == HTTPStatus.OK
    assert f"{instance.public_id}: Cannot restart an instance that is stopping." in page_messages(refused)

    assert "Are you sure you want to destroy" in client.get(url("destroy")).content.decode()
    assert client.get(url("stop")).status_code == HTTPStatus.METHOD_NOT_ALLOWED
    instance.refresh_from_db()
    assert instance.status == Instance.Status.STOPPING
    client.post(url("destroy"), {"confirmed": "yes"})
    instance.refresh_from_db()
    assert instance.status == Instance.Status.TERMINATING
    assert operator_events(instance, InstanceEvent.Kind.DESTROY_REQUESTED)[0].actor == olga


def test_only_users_allowed_to_change_instances_may_act(client, alice, this_host):
    instance = running(alice, this_host, 0)
    viewer = UserFactory(username="vera", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_instance"))
    client.force_login(viewer)

    page = client.get(reverse("admin:instances_instance_change", args=[instance.pk])).content.decode()
    assert "/lifecycle/" not in page
    assert "stop_instances" not in client.get(reverse(CHANGELIST)).content.decode()
    act(client, "stop_instances", instance)
    lifecycle = reverse("admin:instances_instance_lifecycle", args=[instance.pk, "stop"])
    assert client.post(lifecycle).status_code == HTTPStatus.FORBIDDEN
    assert client.post(lifecycle.replace("stop", "destroy"), {"confirmed": "yes"}).status_code == HTTPStatus.FORBIDDEN

    instance.refresh_from_db()
    assert instance.status == Instance.Status.RUNNING
    assert not instance.events.exists()


def settled(instance: Instance, *statuses: str) -> Instance:
    """The row once the worker has moved it to one of `statuses`."""
    return wait_until(
        lambda: Instance.objects.filter(pk=instance.pk, status__in=statuses).first(),
        timeout=90,
        what=f"{instance.public_id} to be {'/'.join(statuses)}",
    )


@pytest.mark.docker
@pytest.mark.celery
def test_an_operators_stop_from_the_admin_is_carried_out_by_the_worker(celery_worker, client, olga, alice, this_host):
    instance = instance_launch(
        user=alice, template=TemplateFactory(), gpu_type="rtx-5090", storage_gb=20, access=["ssh"]
    )
    instance = settled(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    client.force_login(olga)

    act(client, "stop_instances", instance)

    instance = settled(instance, "stopped")
    assert instance.gpu is None
    (event,) = operator_events(instance, InstanceEvent.Kind.STOP_REQUESTED)
    assert event.actor == olga
    assert instance.events.filter(kind=InstanceEvent.Kind.ENDED).exists()


# -- the catalog's form: the same check as the API (templates_app.validation) --------------
JSON_FIELDS = ("ports", "env", "command", "access_methods", "cap_add")


def template_form(template: Template, **changes) -> dict[str, object]:
    """The admin's change form for `template` as a browser posts it, with `changes`."""
    data: dict[str, object] = {f: getattr(template, f) for f in TEMPLATE_FIELDS if f != "enabled"}
    data.update(changes)
    data = {f: "" if value is None else value for f, value in data.items()}  # a blank field posts ""
    for field in JSON_FIELDS:
        data[field] = json.dumps(data[field])
    if template.enabled:
        data["enabled"] = "on"
    return data


def staff(username: str, *codenames: str):
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.mark.parametrize(
    "changes",
    [
        {"cap_add": ["ALL", "SYS_ADMIN", "SYS_MODULE"]},
        {"cap_add": ["CHOWN", "NET_ADMIN"]},
        {"env": {"LD_PRELOAD": "/workspace/evil.so"}},
        {"env": {"PYTHONPATH": "/workspace"}},
        {"env": {"BASH_ENV": "/workspace/x.sh"}},
        {"volume_path": "/workspace/../../etc"},
        {"volume_path": "/workspace:/host"},
        {"image": "Evil/Miner:latest"},
        {"image": "--privileged"},
        {"ports": [{"name": "ssh", "port": 70000, "protocol": "udp"}]},
    ],
    ids=repr,
)
def test_the_template_form_refuses_what_the_api_refuses(client, changes):
    """A staff user with only `change_template` (the case of issue 16) saves nothing of it."""
    template = TemplateFactory()
    before = Template.objects.values().get(pk=template.pk)
    client.force_login(staff("tess", "view_template", "change_template"))
    url = reverse("admin:templates_app_template_change", args=[template.pk])
    response = client.post(url, template_form(template, **changes))
    assert response.status_code == HTTPStatus.OK  # the form again, with its errors; no redirect
    (field,) = changes
    assert response.context["adminform"].form.errors.get(field), response.context["adminform"].form.errors
    assert Template.objects.values().get(pk=template.pk) == before


def test_the_template_form_saves_an_allowed_change_and_adds_a_checked_template(client, olga):
    template = TemplateFactory()
    client.force_login(olga)
    url = reverse("admin:templates_app_template_change", args=[template.pk])
    changes = {"cap_add": ["CHOWN", "FOWNER"], "env": {"HF_HOME": "/workspace/hf"}, "image": "gpucloud/jax:0.4"}
    assert client.post(url, template_form(template, **changes)).status_code == HTTPStatus.FOUND
    template.refresh_from_db()
    assert (template.cap_add, template.env, template.image) == (
        ["CHOWN", "FOWNER"],
        {"HF_HOME": "/workspace/hf"},
        "gpucloud/jax:0.4",
    )

    add = reverse("admin:templates_app_template_add")
    hostile = template_form(template, slug="evil", cap_add=["SYS_ADMIN"])
    assert client.post(add, hostile).status_code == HTTPStatus.OK
    assert not Template.objects.filter(slug="evil").exists()


# -- customers' SSH keys: read-only in the admin ----------------------------------------------
def test_staff_cannot_add_or_replace_a_customers_ssh_key_but_may_delete_it(client, olga, alice):
    key = sshkey_create(user=alice, name="laptop", public_key=ed25519_pub())
    before = SSHKey.objects.values().get(pk=key.pk)
    client.force_login(olga)  # a superuser: even all permissions do not make keys writable
    change = reverse("admin:instances_sshkey_change", args=[key.pk])
    page = client.get(change)
    assert page.status_code == HTTPStatus.OK
    assert 'name="_save"' not in page.content.decode()  # shown, not editable

    planted = {"owner": olga.pk, "name": "laptop", "public_key": ed25519_pub()}
    assert client.post(change, planted).status_code == HTTPStatus.FORBIDDEN
    add = reverse("admin:instances_sshkey_add")
    assert client.post(add, {**planted, "owner": alice.pk, "name": "staff"}).status_code == HTTPStatus.FORBIDDEN
    assert list(SSHKey.objects.values()) == [before]

    # Deleting a (say, leaked) key only takes access away: allowed.
    delete = reverse("admin:instances_sshkey_delete", args=[key.pk])
    assert client.post(delete, {"post": "yes"}).status_code == HTTPStatus.FOUND
    assert not SSHKey.objects.exists()


# -- a host's network fields: a permission of their own, every change logged ------------------
def host_form(host: Host, **changes) -> dict[str, object]:
    """The admin's host form as a browser posts it (no GPU rows in its inline)."""
    fields = ("name", "docker_url", "public_address", "bind_address", "port_range_start", "port_range_end", "status")
    management = {f"gpus-{k}": v for k, v in (("TOTAL_FORMS", 0), ("INITIAL_FORMS", 0), ("MAX_NUM_FORMS", 1000))}
    return {**{f: getattr(host, f) for f in fields}, **management, **changes}


def test_host_network_fields_need_their_own_permission(client):
    host = HostFactory(public_address="gpu.example.com", docker_url="unix:///var/run/docker.sock")
    operator = staff("hank", "view_host", "change_host")
    client.force_login(operator)
    url = reverse("admin:instances_host_change", args=[host.pk])
    hostile = {"public_address": "evil.example.net", "docker_url": "tcp://10.0.0.9:2375", "bind_address": "10.0.0.9"}
    response = client.post(url, host_form(host, status="draining", **hostile))
    assert response.status_code == HTTPStatus.FOUND  # the rest of the form still saves
    host.refresh_from_db()
    assert host.status == "draining"
    assert (host.public_address, host.docker_url, host.bind_address) == (
        "gpu.example.com",
        "unix:///var/run/docker.sock",
        "127.0.0.1",
    )
    assert not LogEntry.objects.filter(change_message__contains="Network changed").exists()


def test_a_host_network_change_by_a_permitted_operator_is_logged_with_old_and_new_values(client):
    host = HostFactory(public_address="gpu.example.com")
    networker = staff("nora", "view_host", "change_host", "change_host_network")
    client.force_login(networker)
    url = reverse("admin:instances_host_change", args=[host.pk])
    response = client.post(url, host_form(host, public_address="gpu2.example.com", docker_url="tcp://127.0.0.1:2376"))
    assert response.status_code == HTTPStatus.FOUND
    host.refresh_from_db()
    assert (host.public_address, host.docker_url) == ("gpu2.example.com", "tcp://127.0.0.1:2376")
    (entry,) = LogEntry.objects.filter(object_id=str(host.pk), change_message__contains="Network changed")
    assert (entry.user, entry.action_flag) == (networker, CHANGE)
    message = entry.get_change_message()
    assert "public_address: 'gpu.example.com' → 'gpu2.example.com'" in message
    assert "docker_url: 'unix:///var/run/docker.sock' → 'tcp://127.0.0.1:2376'" in message
    assert "bind_address" not in message  # unchanged


# -- API tokens: staff revoke, never bring back ------------------------------------------------
def test_staff_revoke_a_token_with_the_action_and_cannot_bring_it_back(client, olga, alice):
    token, key = token_create(user=alice, name="ci")
    client.force_login(olga)
    changelist = reverse("admin:instances_apitoken_changelist")
    done = client.post(changelist, {"action": "revoke", "_selected_action": [token.pk]}, follow=True)
    assert "1 token(s) revoked" in done.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert token_authenticate(key=key) is None

    # The change form shows the revocation and the expiry; posting them back changes nothing.
    change = reverse("admin:instances_apitoken_change", args=[token.pk])
    client.post(change, {"revoked_at_0": "", "revoked_at_1": "", "expires_at_0": "2099-01-01", "expires_at_1": "00:00"})
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert token.expires_at is None
    assert token_authenticate(key=key) is None
