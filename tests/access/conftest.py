from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.access.cloudflare_fake import FakeCloudflare, serve


@pytest.fixture
def fake_cloudflare() -> Iterator[FakeCloudflare]:
    """A local Cloudflare API (tests/access/cloudflare_fake.py) on 127.0.0.1."""
    fake = FakeCloudflare(
        token="cf-test-token-0123456789",
        account_id="acc0123456789abcdef",
        zone_id="zone0123456789abcdef",
        zone_name="gpus.example.com",
        tunnel_id="c1744f8b-faa1-48a4-9e5c-02ac921467fa",
    )
    server = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def cloudflare_settings(fake_cloudflare, settings) -> FakeCloudflare:
    """Cloudflare exposure mode, with the real SDK pointed at the local fake."""
    settings.GPUCLOUD_EXPOSURE = "cloudflare"
    settings.GPUCLOUD_PUBLIC_DOMAIN = fake_cloudflare.zone_name
    settings.GPUCLOUD_CLOUDFLARE_API_TOKEN = fake_cloudflare.token
    settings.GPUCLOUD_CLOUDFLARE_ACCOUNT_ID = fake_cloudflare.account_id
    settings.GPUCLOUD_CLOUDFLARE_ZONE_ID = fake_cloudflare.zone_id
    settings.GPUCLOUD_CLOUDFLARE_TUNNEL_ID = fake_cloudflare.tunnel_id
    settings.GPUCLOUD_CLOUDFLARE_API_BASE = fake_cloudflare.base_url
    return fake_cloudflare
