"""The REST API (DRF, drf-spectacular), its per-process cache, request waits, Prometheus."""

from __future__ import annotations

from gpucloud.env import env, env_bool, env_int, env_list
from gpucloud.settings.accounts import GPUCLOUD_TRUSTED_PROXIES

# REST framework
REST_FRAMEWORK = {
    # An int, never DRF's default None (which trusts the whole, client-written header).
    "NUM_PROXIES": GPUCLOUD_TRUSTED_PROXIES,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes a missing login a 401, not a 403.
        "instances.access.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Read at request time by instances.access.authentication; "N/second|minute|hour|day".
    "DEFAULT_THROTTLE_RATES": {
        "instance-create": env("GPUCLOUD_THROTTLE_CREATE", "30/minute"),
        "auth-failure": env("GPUCLOUD_THROTTLE_AUTH_FAILURES", "20/minute"),
    },
    # DRF's parsers, bounded: an oversized or too deeply nested body is a 4xx, not a 500.
    "DEFAULT_PARSER_CLASSES": [
        "gpucloud.parsers.JSONParser",
        "gpucloud.parsers.FormParser",
        "gpucloud.parsers.MultiPartParser",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "gpucloud.exceptions.api_exception_handler",
    # LimitOffsetPagination with a maximum limit and a bounded offset (a 400 past it).
    "DEFAULT_PAGINATION_CLASS": "gpucloud.pagination.BoundedPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "GPU Cloud API",
    "DESCRIPTION": "Launch, reach and pay for GPU instances.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Token authentications and instance lists kept in each web process, exact by versions
# in Redis (instances.cache); only with REDIS_URL.
GPUCLOUD_API_CACHE = env_bool("GPUCLOUD_API_CACHE", default=True)

# The longest a launch's `?wait=` holds a web worker: keep it below gunicorn's --timeout
# (30 s in docker-compose.yml, the Dockerfile and scripts/run), or gunicorn kills the
# worker mid-request and the client sees an error for an instance that was created.
GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS = env_int("GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS", 20)
# How long a launch's Idempotency-Key answers a retry with the instance it made.
GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS = env_int("GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS", 86400)
# How long the web process waits for a host's worker to send an instance's logs.
GPUCLOUD_LOGS_WAIT_SECONDS = env_int("GPUCLOUD_LOGS_WAIT_SECONDS", 10)

# Prometheus /metrics (gpucloud/metrics.py): a scraper sends `Authorization: Bearer
# <GPUCLOUD_METRICS_TOKEN>`, or scrapes from an address in the allow-list (networks,
# comma-separated; loopback by default, "" for none). Anything else gets 403.
GPUCLOUD_METRICS_TOKEN = env("GPUCLOUD_METRICS_TOKEN")
GPUCLOUD_METRICS_ALLOWED_ADDRESSES = env_list("GPUCLOUD_METRICS_ALLOWED_ADDRESSES", "127.0.0.1/32,::1/128")
# With several gunicorn workers: a directory they share (emptied at start) so request
# metrics are summed over all of them (prometheus_client's multiprocess mode).
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR")
