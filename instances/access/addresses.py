"""How a customer reaches an instance: every access URL is computed here, and only here.

Two exposure modes (settings.GPUCLOUD_EXPOSURE):
- "direct": the instance's host ports on the host's public address;
- "cloudflare": one hostname per service, `<instance>-<service>.<domain>`, routed by
  the host's named tunnel (instances.access.exposure keeps its ingress rules and DNS records
  in step with these names, so both call `service_hostname`).

Secrets (the root password, the access token that JupyterLab, code-server and the
web terminal check) are decrypted only when the caller may see them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from django.conf import settings

from instances.access.crypto import decrypt
from instances.models import Instance, PortBinding

DIRECT = "direct"
CLOUDFLARE = "cloudflare"
EXPOSURE_MODES = (DIRECT, CLOUDFLARE)

# Port names of the catalog that are access methods of their own; any other HTTP port
# (comfyui, webui, openai-api, ...) is a template's web UI, listed under "http".
NAMED_SERVICES = ("ssh", "jupyter", "code-server", "terminal")

# Statuses in which the instance's ports are (or are about to be) published.
EXPOSED_STATUSES = Instance.GPU_HOLDING


def exposure_mode() -> str:
    mode = (settings.GPUCLOUD_EXPOSURE or DIRECT).strip().lower()
    if mode not in EXPOSURE_MODES:
        raise ValueError(f"GPUCLOUD_EXPOSURE must be one of {EXPOSURE_MODES}, not {mode!r}")
    return mode


def instance_label(*, instance: Any) -> str:
    # A DNS label: public ids are `inst_<hex>`, and "_" is not valid in a hostname
    # (no TLS certificate covers it), so it becomes "-".
    return instance.public_id.replace("_", "-").lower()


def service_hostname(*, instance: Any, service: str) -> str:
    """`<instance>-<service>.<domain>`: one label below the zone, so a wildcard
    certificate of the zone covers it."""
    domain = settings.GPUCLOUD_PUBLIC_DOMAIN.strip().strip(".")
    if not domain:
        raise ValueError("GPUCLOUD_PUBLIC_DOMAIN must be set when GPUCLOUD_EXPOSURE is 'cloudflare'")
    return f"{instance_label(instance=instance)}-{service.lower()}.{domain}"


def _access_method(binding: Any) -> str:
    if binding.name in NAMED_SERVICES:
        return binding.name
    return "http" if binding.protocol == "http" else "tcp"


def exposed_bindings(*, instance: Instance) -> list[PortBinding]:
    """The instance's port bindings the customer asked to reach (all when none was named).

    Raw TCP ports are always listed: the lifecycle publishes them whatever was asked."""
    return _requested(bindings=instance.ports.all(), access=instance.access)


def _requested(*, bindings: Iterable[Any], access: list[str]) -> list[Any]:
    requested = {*access, "tcp"} if access else None
    ordered = sorted(bindings, key=lambda b: b.host_port)
    if requested is None:
        return ordered
    return [b for b in ordered if _access_method(b) in requested]


def _http_url(*, base: str, service: str, token: str) -> str:
    # Only JupyterLab logs in from the URL; code-server and the terminal ask for the
    # token as their password (shown as "token" to the owner).
    if service == "jupyter" and token:
        return f"{base}/?token={quote(token, safe='')}"
    return f"{base}/"


def access_for(*, instance: Instance, reveal_secrets: bool) -> dict[str, Any]:
    """The ways into `instance`, e.g.

    {"ssh": "ssh root@203.0.113.5 -p 20001",
     "jupyter": "http://203.0.113.5:20002/?token=…",
     "code-server": "http://203.0.113.5:20003/", "terminal": "http://203.0.113.5:20004/",
     "http": {"comfyui": "http://203.0.113.5:20005/"}, "tcp": {"name": "203.0.113.5:20006"},
     "password": "…", "token": "…"}

    URLs appear while the instance holds its ports (pending to running); the password
    and the token, and the token inside the Jupyter URL, only when `reveal_secrets`.
    Reads the instance's host and port bindings; no I/O beyond the database.
    """
    address = instance.host.public_address if instance.host is not None else None
    access: dict[str, Any] = {}
    token = decrypt(instance.access_token_encrypted) if reveal_secrets else ""
    if instance.status in EXPOSED_STATUSES and address is not None:
        mode = exposure_mode()
        for binding in _requested(bindings=instance.ports.all(), access=instance.access):
            method = _access_method(binding)
            if mode == CLOUDFLARE:
                hostname = service_hostname(instance=instance, service=binding.name)
                if method == "ssh":
                    value = f'ssh -o ProxyCommand="cloudflared access ssh --hostname %h" root@{hostname}'
                elif method == "tcp":
                    value = f"cloudflared access tcp --hostname {hostname} --url 127.0.0.1:{binding.container_port}"
                else:
                    value = _http_url(base=f"https://{hostname}", service=binding.name, token=token)
            elif method == "ssh":
                value = f"ssh root@{address} -p {binding.host_port}"
            elif method == "tcp":
                value = f"{address}:{binding.host_port}"
            else:
                value = _http_url(base=f"http://{address}:{binding.host_port}", service=binding.name, token=token)
            if method in NAMED_SERVICES:
                access[method] = value
            else:
                access.setdefault(method, {})[binding.name] = value
    if reveal_secrets:
        password = decrypt(instance.password_encrypted)
        if password:
            access["password"] = password
        if token:
            access["token"] = token
    return access
