"""access_for: the one place access URLs are computed, in both exposure modes."""

from __future__ import annotations

import pytest

from instances.access.addresses import access_for, service_hostname
from instances.access.crypto import encrypt
from instances.models import Instance, PortBinding
from tests.factories import HostFactory, InstanceFactory, TemplateFactory

PORTS = [
    {"name": "ssh", "port": 22, "protocol": "tcp"},
    {"name": "jupyter", "port": 8888, "protocol": "http"},
    {"name": "code-server", "port": 8080, "protocol": "http"},
    {"name": "terminal", "port": 7681, "protocol": "http"},
    {"name": "comfyui", "port": 8188, "protocol": "http"},
]


@pytest.fixture
def instance(alice, gpu_types):
    host = HostFactory(name="ws1", public_address="203.0.113.5")
    template = TemplateFactory(
        slug="full", ports=PORTS, access_methods=["ssh", "jupyter", "code-server", "terminal", "http"]
    )
    inst = InstanceFactory(
        owner=alice,
        template=template,
        gpu_type=gpu_types["rtx-5090"],
        host=host,
        status=Instance.Status.RUNNING,
        access=["ssh", "jupyter", "code-server", "terminal", "http"],
        password_encrypted=encrypt("root-pass-123"),
        access_token_encrypted=encrypt("tok/en+1"),
    )
    for offset, port in enumerate(PORTS):
        PortBinding.objects.create(
            host=host,
            host_port=21000 + offset,
            instance=inst,
            name=port["name"],
            container_port=port["port"],
            protocol=port["protocol"],
        )
    return inst


def test_direct_mode_gives_host_ports_on_the_public_address(instance, settings):
    settings.GPUCLOUD_EXPOSURE = "direct"

    access = access_for(instance=instance, reveal_secrets=True)

    assert access == {
        "ssh": "ssh root@203.0.113.5 -p 21000",
        "jupyter": "http://203.0.113.5:21001/?token=tok%2Fen%2B1",
        "code-server": "http://203.0.113.5:21002/",
        "terminal": "http://203.0.113.5:21003/",
        "http": {"comfyui": "http://203.0.113.5:21004/"},
        "password": "root-pass-123",
        "token": "tok/en+1",
    }


def test_cloudflare_mode_gives_tunnel_hostnames_and_a_proxied_ssh_command(instance, settings):
    settings.GPUCLOUD_EXPOSURE = "cloudflare"
    settings.GPUCLOUD_PUBLIC_DOMAIN = "gpus.example.com"
    label = instance.public_id.replace("_", "-")

    access = access_for(instance=instance, reveal_secrets=True)

    assert access["ssh"] == (
        f'ssh -o ProxyCommand="cloudflared access ssh --hostname %h" root@{label}-ssh.gpus.example.com'
    )
    assert access["jupyter"] == f"https://{label}-jupyter.gpus.example.com/?token=tok%2Fen%2B1"
    assert access["code-server"] == f"https://{label}-code-server.gpus.example.com/"
    assert access["http"] == {"comfyui": f"https://{label}-comfyui.gpus.example.com/"}
    assert service_hostname(instance=instance, service="terminal") == f"{label}-terminal.gpus.example.com"


def test_secrets_are_shown_only_when_revealed(instance, settings):
    settings.GPUCLOUD_EXPOSURE = "direct"

    access = access_for(instance=instance, reveal_secrets=False)

    assert "password" not in access
    assert "token" not in access
    assert access["jupyter"] == "http://203.0.113.5:21001/"
    assert "tok" not in repr(access)


def test_only_the_requested_access_methods_are_listed(instance, settings):
    settings.GPUCLOUD_EXPOSURE = "direct"
    instance.access = ["ssh"]
    instance.save()

    assert set(access_for(instance=instance, reveal_secrets=False)) == {"ssh"}


def test_a_stopped_instance_shows_no_urls_but_its_owner_keeps_the_password(instance, settings):
    settings.GPUCLOUD_EXPOSURE = "direct"
    instance.status = Instance.Status.STOPPED
    instance.save()

    assert access_for(instance=instance, reveal_secrets=True) == {"password": "root-pass-123", "token": "tok/en+1"}
    assert access_for(instance=instance, reveal_secrets=False) == {}
