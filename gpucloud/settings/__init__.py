"""GPU Cloud settings: environment variables only (12-factor).

Every variable is listed in README.md. Without DATABASE_URL / REDIS_URL the quick
start runs on embedded defaults: SQLite and kombu's filesystem transport (dev-only,
not crash-safe). With DEBUG off, a missing or weak SECRET_KEY refuses start-up.

One module per concern; each imports from the others the values it builds on:
core (Django itself), accounts (sign-in, security, email), api (DRF, its cache,
metrics), tasks (Celery, the cache backend), hosts (each host's worker: Docker,
workspaces, images, GPUs), lifecycle (idle stop, maximum runtime, notifications),
access (how instances are reached, credential encryption), payments (Stripe, billing),
snapshots (their object store) and schedule (beat's jobs).
"""

from gpucloud.settings.access import *  # noqa: F403
from gpucloud.settings.accounts import *  # noqa: F403
from gpucloud.settings.api import *  # noqa: F403
from gpucloud.settings.core import *  # noqa: F403
from gpucloud.settings.hosts import *  # noqa: F403
from gpucloud.settings.lifecycle import *  # noqa: F403
from gpucloud.settings.payments import *  # noqa: F403
from gpucloud.settings.schedule import *  # noqa: F403
from gpucloud.settings.snapshots import *  # noqa: F403
from gpucloud.settings.tasks import *  # noqa: F403
