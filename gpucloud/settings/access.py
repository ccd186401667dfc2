"""How customers reach instances (host ports or Cloudflare tunnels) and the key that
encrypts their credentials."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from gpucloud.env import env
from gpucloud.settings.core import DEBUG

# Access: "direct" (host ports) or "cloudflare" (named tunnel hostnames).
GPUCLOUD_EXPOSURE = env("GPUCLOUD_EXPOSURE", "direct")
GPUCLOUD_PUBLIC_DOMAIN = env("GPUCLOUD_PUBLIC_DOMAIN")
# Cloudflare mode: the API token (Zone DNS edit + Cloudflare Tunnel edit), the account,
# the zone of GPUCLOUD_PUBLIC_DOMAIN and this host's named tunnel. API_BASE overrides
# the API's URL (tests point the SDK at a local server).
GPUCLOUD_CLOUDFLARE_API_TOKEN = env("GPUCLOUD_CLOUDFLARE_API_TOKEN")
GPUCLOUD_CLOUDFLARE_ACCOUNT_ID = env("GPUCLOUD_CLOUDFLARE_ACCOUNT_ID")
GPUCLOUD_CLOUDFLARE_ZONE_ID = env("GPUCLOUD_CLOUDFLARE_ZONE_ID")
GPUCLOUD_CLOUDFLARE_TUNNEL_ID = env("GPUCLOUD_CLOUDFLARE_TUNNEL_ID")
GPUCLOUD_CLOUDFLARE_API_BASE = env("GPUCLOUD_CLOUDFLARE_API_BASE")

# Credentials of instances are encrypted at rest with this key (Fernet, urlsafe
# base64 of 32 bytes). Derived from SECRET_KEY when unset, in DEBUG only.
GPUCLOUD_ENCRYPTION_KEY = env("GPUCLOUD_ENCRYPTION_KEY")
if not GPUCLOUD_ENCRYPTION_KEY and not DEBUG and env("GPUCLOUD_REQUIRE_ENCRYPTION_KEY", "1") == "1":
    raise ImproperlyConfigured(
        "GPUCLOUD_ENCRYPTION_KEY is not set. Production mode refuses to start without it: "
        "generate one with `python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'`."
    )
