"""Sending one webhook request: the signature, the address check, the POST.

The signature is Stripe's scheme: `GpuCloud-Signature: t=<unix time>,v1=<hex>`, where
the hex is HMAC-SHA256 of `"<t>.<raw body>"` with the endpoint's secret; receivers
recompute it and reject an old `t`. The request goes to the very address that was
checked (no second DNS lookup, no redirects followed), so a name cannot be turned to
a private address between the check and the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

SIGNATURE_HEADER = "GpuCloud-Signature"


class AddressRefused(Exception):
    """The URL is not http(s), does not resolve, or resolves to an address not allowed."""


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signature_verify(*, secret: str, header: str, body: bytes, now: int, tolerance_seconds: int = 300) -> bool:
    """What a receiver does (and the tests): recompute and compare, refuse stale times."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret=secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, f"t={timestamp},v1={parts.get('v1', '')}")


def _allowed(address: str, *, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


def address_check(url: str, *, allow_loopback: bool) -> str:
    """The address to connect to for `url`. Raises AddressRefused for a scheme other
    than http(s), a name that does not resolve, or any private, loopback (unless
    allowed), link-local, reserved or multicast address among its addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressRefused("only http:// and https:// URLs with a host name are allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise AddressRefused(f"{parts.hostname} does not resolve") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    refused = [a for a in addresses if not _allowed(a, allow_loopback=allow_loopback)]
    if refused or not addresses:
        raise AddressRefused(f"{parts.hostname} resolves to an address that is not allowed ({', '.join(refused)})")
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post(*, url: str, body: bytes, headers: dict[str, str], allow_loopback: bool, timeout_seconds: float) -> Outcome:
    """POST `body` to `url` once. Raises AddressRefused; any other failure is an Outcome."""
    address = address_check(url, allow_loopback=allow_loopback)
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    kind = _PinnedHTTPS if https else _PinnedHTTP
    connection = kind(parts.hostname or "", port, address=address, timeout=timeout_seconds)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        response.read(4096)
        return Outcome(status_code=response.status)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(status_code=None, error=f"{type(exc).__name__}: {exc}"[:200])
    finally:
        connection.close()
