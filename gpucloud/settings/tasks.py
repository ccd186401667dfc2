"""Celery (broker, results, limits) and Django's cache."""

from __future__ import annotations

from gpucloud.env import env, env_bool, env_int
from gpucloud.settings.core import VAR_DIR

# Celery. Redis in production and in the tests; kombu's filesystem transport for the
# quick start (dev-only: a task in flight when the worker dies is lost).
REDIS_URL = env("REDIS_URL")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
else:
    # Must exceed the longest task and any countdown, or a slow task is redelivered.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Results: only the tasks the web process waits on keep one (instances.tasks.
# instance_logs_tail); every other task ignores its result. Redis with REDIS_URL, else
# files in VAR_DIR (the quick start: web and worker share the machine).
_results_dir = (VAR_DIR / "results").resolve()
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", REDIS_URL or _results_dir.as_uri())
if CELERY_RESULT_BACKEND.startswith("file://"):
    _results_dir.mkdir(parents=True, exist_ok=True)
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# Cache: Redis when configured, local memory otherwise (locks are instances.services.locks:
# Redis or the database, never this cache).
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
