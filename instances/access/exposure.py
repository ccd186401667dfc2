"""Publishing an instance's services to the internet, per settings.GPUCLOUD_EXPOSURE.

- "direct": nothing to do; customers reach the host ports (instances.access).
- "cloudflare": every host runs one named Cloudflare Tunnel (cloudflared on the host,
  remotely managed). Publishing an instance adds one ingress rule per service,
  `<instance>-<service>.<domain>` → the service's host port on the host's bind
  address, and a proxied CNAME `<that hostname>` → `<tunnel id>.cfargotunnel.com`;
  withdrawing removes exactly that instance's rules and records. Both are idempotent,
  so the lifecycle may call them again after a crash.

This module is the only one that talks to the Cloudflare API (the `cloudflare` SDK),
and turns its errors into ExposureFailed, so callers never see the SDK's exceptions.
Settings: GPUCLOUD_CLOUDFLARE_API_TOKEN, GPUCLOUD_CLOUDFLARE_ACCOUNT_ID,
GPUCLOUD_CLOUDFLARE_ZONE_ID, GPUCLOUD_CLOUDFLARE_TUNNEL_ID (a host may name its own in
Host.facts["cloudflare_tunnel_id"]), GPUCLOUD_CLOUDFLARE_API_BASE (tests point the
SDK at a local server), GPUCLOUD_PUBLIC_DOMAIN.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from instances.access.addresses import CLOUDFLARE, exposed_bindings, exposure_mode, instance_label, service_hostname
from instances.errors import ExposureFailed, LockBusy
from instances.models import Host, Instance, PortBinding
from instances.services.locks import lock_hold

logger = logging.getLogger(__name__)

CATCH_ALL = {"service": "http_status:404"}
# How long a publish waits for another's read-modify-write of the same tunnel: a few
# API round trips (the SDK retries twice), well under a task's time limit.
TUNNEL_LOCK_WAIT_SECONDS = 60


def _client() -> Any:
    import cloudflare

    options: dict[str, Any] = {"api_token": settings.GPUCLOUD_CLOUDFLARE_API_TOKEN, "max_retries": 2}
    if settings.GPUCLOUD_CLOUDFLARE_API_BASE:
        options["base_url"] = settings.GPUCLOUD_CLOUDFLARE_API_BASE
    return cloudflare.Cloudflare(**options)


def _tunnel_id(host: Host) -> str:
    tunnel_id = (host.facts or {}).get("cloudflare_tunnel_id") or settings.GPUCLOUD_CLOUDFLARE_TUNNEL_ID
    if not tunnel_id:
        raise ExposureFailed(
            "No Cloudflare tunnel is configured for this host: set GPUCLOUD_CLOUDFLARE_TUNNEL_ID.",
            detail={"host": host.name},
        )
    return tunnel_id


def _origin(*, host: Host, binding: PortBinding) -> str:
    # cloudflared runs on the host and reaches the port where Docker published it.
    scheme = "ssh" if binding.name == "ssh" else ("http" if binding.protocol == "http" else "tcp")
    return f"{scheme}://{host.bind_address}:{binding.host_port}"


def _belongs_to(hostname: str | None, *, instance: Instance) -> bool:
    # Labels are `<inst-hex>-<service>` with a fixed-length id, so the prefix is exact.
    domain = settings.GPUCLOUD_PUBLIC_DOMAIN.strip().strip(".").lower()
    name = (hostname or "").lower()
    return name.startswith(instance_label(instance=instance) + "-") and name.endswith("." + domain)


def _wanted_rules(*, instance: Instance, host: Host) -> list[dict[str, Any]]:
    return [
        {"hostname": service_hostname(instance=instance, service=b.name), "service": _origin(host=host, binding=b)}
        for b in exposed_bindings(instance=instance)
    ]


def _update_ingress(*, client: Any, host: Host, instance: Instance, wanted: list[dict[str, Any]]) -> None:
    """Replaces this instance's ingress rules with `wanted`, keeping everyone else's."""
    account_id = settings.GPUCLOUD_CLOUDFLARE_ACCOUNT_ID
    tunnel_id = _tunnel_id(host)
    current = client.zero_trust.tunnels.cloudflared.configurations.get(tunnel_id, account_id=account_id)
    config = (current.config.to_dict() if current and current.config else {}) or {}
    ingress = config.get("ingress") or []
    others = [rule for rule in ingress if rule.get("hostname") and not _belongs_to(rule["hostname"], instance=instance)]
    # Cloudflare requires a last rule without a hostname that catches everything else.
    catch_all = next((rule for rule in ingress if not rule.get("hostname")), CATCH_ALL)
    new_ingress = [*others, *wanted, catch_all]
    if new_ingress == ingress:
        return
    config["ingress"] = new_ingress
    client.zero_trust.tunnels.cloudflared.configurations.update(tunnel_id, account_id=account_id, config=config)


def _instance_records(*, client: Any, instance: Instance) -> list[Any]:
    records = client.dns.records.list(
        zone_id=settings.GPUCLOUD_CLOUDFLARE_ZONE_ID,
        type="CNAME",
        name={"startswith": instance_label(instance=instance) + "-"},
    )
    return [record for record in records if _belongs_to(record.name, instance=instance)]


def _sync_dns(*, client: Any, host: Host, instance: Instance, hostnames: set[str]) -> None:
    zone_id = settings.GPUCLOUD_CLOUDFLARE_ZONE_ID
    target = f"{_tunnel_id(host)}.cfargotunnel.com"
    existing = {}
    for record in _instance_records(client=client, instance=instance):
        if record.name.lower() in hostnames and record.content == target and record.name.lower() not in existing:
            existing[record.name.lower()] = record
        else:
            client.dns.records.delete(record.id, zone_id=zone_id)
    for hostname in sorted(hostnames - set(existing)):
        client.dns.records.create(
            zone_id=zone_id,
            name=hostname,
            type="CNAME",
            content=target,
            proxied=True,
            ttl=1,  # "automatic", required for proxied records
            comment=f"gpucloud {instance.public_id}",
        )


def _sync(*, instance: Instance, publish: bool) -> None:
    import cloudflare

    host = instance.host
    if host is None:
        return
    client = _client()
    wanted = _wanted_rules(instance=instance, host=host) if publish else []
    try:
        # The tunnel's configuration is one document shared by every instance on the
        # host (and on hosts sharing its tunnel): read-modify-write under a lock named
        # for the tunnel, or two launches at once would each drop the other's rules. A
        # named lock, not the Host row's: the API calls run outside any transaction.
        with lock_hold(name=f"cloudflare-tunnel:{_tunnel_id(host)}", wait_seconds=TUNNEL_LOCK_WAIT_SECONDS):
            _update_ingress(client=client, host=host, instance=instance, wanted=wanted)
        _sync_dns(client=client, host=host, instance=instance, hostnames={rule["hostname"] for rule in wanted})
    except (cloudflare.APIError, LockBusy) as exc:
        logger.warning("cloudflare %s of %s failed: %s", "publish" if publish else "withdraw", instance, type(exc))
        raise ExposureFailed(detail={"instance": instance.public_id, "reason": type(exc).__name__}) from exc


def exposure_publish(*, instance: Instance) -> None:
    """Makes the instance's services reachable in the configured exposure mode.

    No-op in "direct" mode. In "cloudflare" mode: sets this instance's ingress rules on
    its host's tunnel and the matching DNS records (idempotent). Call once its ports
    are bound. Raises ExposureFailed when the Cloudflare API refuses or is unreachable,
    or another publish holds the host's tunnel for over TUNNEL_LOCK_WAIT_SECONDS.
    """
    if exposure_mode() != CLOUDFLARE:
        return
    _sync(instance=instance, publish=True)


def exposure_withdraw(*, instance: Instance) -> None:
    """Removes every public route to the instance (on stop, failure and destroy).

    No-op in "direct" mode. In "cloudflare" mode: removes this instance's ingress
    rules and DNS records, whatever ports it had (idempotent). Raises ExposureFailed.
    """
    if exposure_mode() != CLOUDFLARE:
        return
    _sync(instance=instance, publish=False)


def exposure_sync(*, instance: Instance, publish: bool) -> None:
    """Publish or withdraw the instance's public routes.

    The lifecycle's one way to call the two hooks above. Outside any transaction; a
    failure is logged and never undoes the lifecycle step (both hooks are idempotent and run
    again on the next step).
    """
    try:
        if publish:
            exposure_publish(instance=instance)
        else:
            exposure_withdraw(instance=instance)
    except Exception as exc:
        logger.warning(
            "instance %s: exposure %s failed: %s",
            instance.public_id,
            "publish" if publish else "withdraw",
            getattr(exc, "code", type(exc).__name__),
        )
