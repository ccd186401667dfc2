"""GPU Cloud settings: environment variables only (12-factor).

Every variable is listed in README.md. Without DATABASE_URL / REDIS_URL the quick
start runs on embedded defaults: SQLite and kombu's filesystem transport (dev-only,
not crash-safe). With DEBUG off, a missing or weak SECRET_KEY refuses start-up.
"""

from __future__ import annotations

import json
import socket
from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from gpucloud.env import env, env_bool, env_int, env_list

BASE_DIR = Path(__file__).resolve().parent.parent


DEBUG = env_bool("DEBUG", default=False)
VAR_DIR = Path(env("GPUCLOUD_VAR_DIR", str(BASE_DIR / "var")))

_DEV_SECRET = "dev-insecure-secret-key-only-for-DEBUG-mode"  # noqa: S105
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Production mode (DEBUG off) refuses to start without "
            "a real secret key: set SECRET_KEY to 50+ random characters, or DEBUG=1 for "
            "development."
        )
    SECRET_KEY = _DEV_SECRET
elif not DEBUG and (len(SECRET_KEY) < 32 or SECRET_KEY.startswith("django-insecure")):
    raise ImproperlyConfigured("SECRET_KEY is too weak for production mode: use 50+ random characters.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_htmx",
    "django_prometheus",
    "djstripe",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.github",
    "allauth.socialaccount.providers.google",
    "templates_app",
    "instances",
    "billing",
]

MIDDLEWARE = [
    # django-prometheus's request metrics (/metrics): first and last, to time everything.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "gpucloud.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "gpucloud" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "billing.web.balance",
            ],
        },
    },
]

WSGI_APPLICATION = "gpucloud.wsgi.application"

# Database: PostgreSQL in production (DATABASE_URL); SQLite for the quick start.
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "db.sqlite3"),
            # Writers wait on SQLite's lock instead of failing at once: web, worker
            # and beat share one file in the quick start.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "gpucloud" / "static"]
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True

# Customers sign in with django-allauth (email + password, verified email; GitHub or
# Google when their keys are set). Operators also use /admin/login/.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
AUTHENTICATION_BACKENDS = [
    # ModelBackend behind allauth's failed-login limits (the admin's and the API's login pages).
    "instances.access.backends.ThrottledModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_REDIRECT_URL = "/accounts/login/"
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[GPU Cloud] "
# Failed logins are throttled per IP and per account (allauth's rate limits).
ACCOUNT_RATE_LIMITS = {"login_failed": env("GPUCLOUD_LOGIN_FAILED_RATE", "10/m/ip,5/5m/key")}
SOCIALACCOUNT_PROVIDERS: dict[str, dict] = {}
for _provider in ("github", "google"):
    _client_id = env(f"{_provider.upper()}_CLIENT_ID")
    if _client_id:
        SOCIALACCOUNT_PROVIDERS[_provider] = {
            "APPS": [{"client_id": _client_id, "secret": env(f"{_provider.upper()}_CLIENT_SECRET"), "key": ""}],
            "SCOPE": ["user:email"] if _provider == "github" else ["profile", "email"],
        }
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True

# Security in production (manage.py check --deploy).
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Reverse proxies of ours in front of Django (compose: 1). Each appends the address it
# saw to X-Forwarded-For: the client is the N-th from the right, and every per-address
# limit keys on it (else all count the proxy). 0: the header is ignored (REMOTE_ADDR).
GPUCLOUD_TRUSTED_PROXIES = env_int("GPUCLOUD_TRUSTED_PROXIES", 0)
ALLAUTH_TRUSTED_PROXY_COUNT = GPUCLOUD_TRUSTED_PROXIES

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

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "GPU Cloud <noreply@localhost>")
# The file backend's folder (EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend).
EMAIL_FILE_PATH = env("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))

# Stripe (dj-stripe). Keys only from the environment.
STRIPE_LIVE_MODE = env_bool("STRIPE_LIVE_MODE", default=False)
STRIPE_TEST_SECRET_KEY = env("STRIPE_TEST_SECRET_KEY", "sk_test_" + "0" * 24)
STRIPE_LIVE_SECRET_KEY = env("STRIPE_LIVE_SECRET_KEY")
STRIPE_TEST_PUBLIC_KEY = env("STRIPE_TEST_PUBLIC_KEY", "pk_test_" + "0" * 24)
STRIPE_LIVE_PUBLIC_KEY = env("STRIPE_LIVE_PUBLIC_KEY")
if env("STRIPE_API_HOST"):  # points the SDK at localstripe in tests; never set in production
    STRIPE_API_HOST = env("STRIPE_API_HOST")
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
DJSTRIPE_USE_NATIVE_JSONFIELD = True
# Webhook payloads are handled by billing (credit/debit once per Stripe id) instead of
# dj-stripe's object sync, which calls back to Stripe for every event: billing.apps
# connects dj-stripe's webhook_pre_process signal (its callback setting is deprecated).

# ---- GPU Cloud -------------------------------------------------------------------
GPUCLOUD_HOST_NAME = env("GPUCLOUD_HOST_NAME", socket.gethostname().split(".")[0].lower())
GPUCLOUD_HOST_ADDRESS = env("GPUCLOUD_HOST_ADDRESS", "127.0.0.1")
# Ports of instances are published on this address only (127.0.0.1 in tests).
GPUCLOUD_BIND_ADDRESS = env("GPUCLOUD_BIND_ADDRESS", "127.0.0.1")
# Stays clear of Linux's ephemeral range (32768-60999).
GPUCLOUD_PORT_RANGE = (env_int("GPUCLOUD_PORT_RANGE_START", 20000), env_int("GPUCLOUD_PORT_RANGE_END", 29999))
GPUCLOUD_DOCKER_URL = env("GPUCLOUD_DOCKER_URL", "unix:///var/run/docker.sock")
GPUCLOUD_DATA_ROOT = Path(env("GPUCLOUD_DATA_ROOT", str(VAR_DIR / "data")))
GPUCLOUD_WORKSPACE_GRACE_SECONDS = env_int("GPUCLOUD_WORKSPACE_GRACE_SECONDS", 24 * 3600)
# A launch is refused (failed, "the workspace disk is full") below this much free space.
GPUCLOUD_WORKSPACE_MIN_FREE_MB = env_int("GPUCLOUD_WORKSPACE_MIN_FREE_MB", 256)
# Workspace quotas (instances/host/loopfs.py): "loop" makes each workspace a loop-mounted
# ext4 of storage_gb (needs root, /dev/loop-control, e2fsprogs); "none" leaves it a plain
# directory bounded only by the data root's disk: the host then takes instances, and
# its preflight flags it. The container's writable layer gets `--storage-opt size=`
# GPUCLOUD_CONTAINER_DISK_GB where the engine's storage driver can bound it (0: never).
GPUCLOUD_WORKSPACE_QUOTA = env("GPUCLOUD_WORKSPACE_QUOTA", "loop")
if GPUCLOUD_WORKSPACE_QUOTA not in ("loop", "none"):
    raise ImproperlyConfigured("GPUCLOUD_WORKSPACE_QUOTA must be 'loop' or 'none'")
GPUCLOUD_CONTAINER_DISK_GB = env_int("GPUCLOUD_CONTAINER_DISK_GB", 20)
# Used / size of mounted workspaces is measured this often; the customer gets a
# `storage-low` event when a workspace passes this percentage.
GPUCLOUD_WORKSPACE_USAGE_SECONDS = env_int("GPUCLOUD_WORKSPACE_USAGE_SECONDS", 60)
GPUCLOUD_WORKSPACE_LOW_PERCENT = env_int("GPUCLOUD_WORKSPACE_LOW_PERCENT", 90)
# Snapshots (instances/host/objectstore.py): "local" keeps them in GPUCLOUD_SNAPSHOT_DIR
# (the quick start), "s3" in an S3-compatible bucket. The keys are never logged.
GPUCLOUD_SNAPSHOT_STORE = env("GPUCLOUD_SNAPSHOT_STORE", "local")
if GPUCLOUD_SNAPSHOT_STORE not in ("local", "s3"):
    raise ImproperlyConfigured("GPUCLOUD_SNAPSHOT_STORE must be 'local' or 's3'")
GPUCLOUD_SNAPSHOT_DIR = Path(env("GPUCLOUD_SNAPSHOT_DIR", str(GPUCLOUD_DATA_ROOT / "snapshots")))
GPUCLOUD_SNAPSHOT_S3_ENDPOINT = env("GPUCLOUD_SNAPSHOT_S3_ENDPOINT", "")  # empty: AWS
GPUCLOUD_SNAPSHOT_S3_BUCKET = env("GPUCLOUD_SNAPSHOT_S3_BUCKET", "gpucloud-snapshots")
GPUCLOUD_SNAPSHOT_S3_REGION = env("GPUCLOUD_SNAPSHOT_S3_REGION", "us-east-1")
GPUCLOUD_SNAPSHOT_S3_ACCESS_KEY = env("GPUCLOUD_SNAPSHOT_S3_ACCESS_KEY", "")
GPUCLOUD_SNAPSHOT_S3_SECRET_KEY = env("GPUCLOUD_SNAPSHOT_S3_SECRET_KEY", "")
GPUCLOUD_SNAPSHOT_S3_PART_MB = env_int("GPUCLOUD_SNAPSHOT_S3_PART_MB", 16)
GPUCLOUD_SNAPSHOT_S3_CONCURRENCY = env_int("GPUCLOUD_SNAPSHOT_S3_CONCURRENCY", 4)
GPUCLOUD_SNAPSHOT_ZSTD_LEVEL = env_int("GPUCLOUD_SNAPSHOT_ZSTD_LEVEL", 3)
# How long one snapshot or restore into a stopped instance may run (its task's soft time
# limit); keep it under the broker's visibility timeout (3600 s).
GPUCLOUD_SNAPSHOT_TIME_LIMIT_SECONDS = env_int("GPUCLOUD_SNAPSHOT_TIME_LIMIT_SECONDS", 3000)
GPUCLOUD_READY_TIMEOUT_SECONDS = env_int("GPUCLOUD_READY_TIMEOUT_SECONDS", 60)
GPUCLOUD_PIDS_LIMIT = env_int("GPUCLOUD_PIDS_LIMIT", 1024)
# Image pulls (issue 13): a missing image is pulled by the provisioning task, so its
# time limit (CELERY_TASK_SOFT_TIME_LIMIT) bounds the pull; a second launch of the same
# image on the host waits up to GPUCLOUD_PULL_WAIT_SECONDS for the first one's pull.
# Progress reaches the timeline at most once per GPUCLOUD_PULL_PROGRESS_SECONDS.
GPUCLOUD_PULL_WAIT_SECONDS = env_int("GPUCLOUD_PULL_WAIT_SECONDS", 240)
GPUCLOUD_PULL_PROGRESS_SECONDS = float(env("GPUCLOUD_PULL_PROGRESS_SECONDS", "2"))
# Beat asks every online host to pull the enabled templates' images it lacks (0: never).
GPUCLOUD_IMAGES_WARM_SECONDS = env_int("GPUCLOUD_IMAGES_WARM_SECONDS", 3600)
# After a start whose container ran but never became ready, the next start waits this
# long, doubled per further failure up to the cap; a good start resets it.
GPUCLOUD_START_BACKOFF_SECONDS = env_int("GPUCLOUD_START_BACKOFF_SECONDS", 30)
GPUCLOUD_START_BACKOFF_MAX_SECONDS = env_int("GPUCLOUD_START_BACKOFF_MAX_SECONDS", 900)
# A host whose runc / NVIDIA Container Toolkit lack known escape fixes takes no instances
# (instances/preflight.py); 1 on that host's worker takes them anyway, knowingly.
GPUCLOUD_PREFLIGHT_OVERRIDE = env_bool("GPUCLOUD_PREFLIGHT_OVERRIDE", default=False)
GPUCLOUD_STORAGE_GB_MIN = env_int("GPUCLOUD_STORAGE_GB_MIN", 10)
GPUCLOUD_STORAGE_GB_MAX = env_int("GPUCLOUD_STORAGE_GB_MAX", 2000)
GPUCLOUD_RECONCILE_SECONDS = env_int("GPUCLOUD_RECONCILE_SECONDS", 30)
GPUCLOUD_METER_SECONDS = env_int("GPUCLOUD_METER_SECONDS", 30)
GPUCLOUD_METRICS_SECONDS = env_int("GPUCLOUD_METRICS_SECONDS", 30)
# Operator economics (admin → Usage records → Economics): what a kWh costs and what one
# GPU's hardware costs per month (amortized; 0: not counted); power samples kept this long.
GPUCLOUD_ELECTRICITY_USD_PER_KWH = Decimal(env("GPUCLOUD_ELECTRICITY_USD_PER_KWH", "0.30"))
GPUCLOUD_HARDWARE_USD_PER_GPU_MONTH = Decimal(env("GPUCLOUD_HARDWARE_USD_PER_GPU_MONTH", "0"))
GPUCLOUD_POWER_SAMPLE_DAYS = env_int("GPUCLOUD_POWER_SAMPLE_DAYS", 400)
# How often beat grants the waitlist (launches that wait for a free GPU of their type).
GPUCLOUD_WAITLIST_SECONDS = env_int("GPUCLOUD_WAITLIST_SECONDS", 10)
# Prometheus /metrics (gpucloud/metrics.py): a scraper sends `Authorization: Bearer
# <GPUCLOUD_METRICS_TOKEN>`, or scrapes from an address in the allow-list (networks,
# comma-separated; loopback by default, "" for none). Anything else gets 403.
GPUCLOUD_METRICS_TOKEN = env("GPUCLOUD_METRICS_TOKEN")
GPUCLOUD_METRICS_ALLOWED_ADDRESSES = env_list("GPUCLOUD_METRICS_ALLOWED_ADDRESSES", "127.0.0.1/32,::1/128")
# With several gunicorn workers: a directory they share (emptied at start) so request
# metrics are summed over all of them (prometheus_client's multiprocess mode).
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR")
# The longest a launch's `?wait=` holds a web worker: keep it below gunicorn's --timeout
# (30 s in docker-compose.yml, the Dockerfile and scripts/run), or gunicorn kills the
# worker mid-request and the client sees an error for an instance that was created.
GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS = env_int("GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS", 20)
# How long a launch's Idempotency-Key answers a retry with the instance it made.
GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS = env_int("GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS", 86400)
# How long the web process waits for a host's worker to send an instance's logs.
GPUCLOUD_LOGS_WAIT_SECONDS = env_int("GPUCLOUD_LOGS_WAIT_SECONDS", 10)

# Idle stop and maximum runtime (instances.services.idle, on each host's worker every
# IDLE_CHECK_SECONDS). Rules per template / GPU type are the operator's (admin); these
# are the defaults where no rule is set (0: no idle stop / no maximum runtime).
GPUCLOUD_IDLE_CHECK_SECONDS = env_int("GPUCLOUD_IDLE_CHECK_SECONDS", 60)
GPUCLOUD_IDLE_DEFAULT_SECONDS = env_int("GPUCLOUD_IDLE_DEFAULT_SECONDS", 0)
GPUCLOUD_IDLE_GPU_THRESHOLD_PERCENT = env_int("GPUCLOUD_IDLE_GPU_THRESHOLD_PERCENT", 5)
# How long before an idle or maximum-runtime stop the customer is warned.
GPUCLOUD_IDLE_WARNING_SECONDS = env_int("GPUCLOUD_IDLE_WARNING_SECONDS", 600)
GPUCLOUD_MAX_RUNTIME_DEFAULT_SECONDS = env_int("GPUCLOUD_MAX_RUNTIME_DEFAULT_SECONDS", 0)
# The longest one keep-alive may postpone an idle stop.
GPUCLOUD_KEEP_ALIVE_MAX_SECONDS = env_int("GPUCLOUD_KEEP_ALIVE_MAX_SECONDS", 24 * 3600)
# Simulated GPUs report the utilization written in <dir>/<gpu uuid> (manage.py
# simulate_gpu_utilization), so idle rules can be tried without a GPU.
GPUCLOUD_SIMULATED_UTILIZATION_DIR = Path(
    env("GPUCLOUD_SIMULATED_UTILIZATION_DIR", str(VAR_DIR / "simulated-gpu-utilization"))
)

# Notifications (instances.notify): customers' webhooks, signed and retried with backoff
# (BACKOFF_SECONDS, doubled per attempt, up to MAX_ATTEMPTS). Deliveries to private,
# loopback and link-local addresses are refused; ALLOW_LOOPBACK=1 only for tests.
GPUCLOUD_WEBHOOK_MAX_ATTEMPTS = env_int("GPUCLOUD_WEBHOOK_MAX_ATTEMPTS", 6)
GPUCLOUD_WEBHOOK_BACKOFF_SECONDS = env_int("GPUCLOUD_WEBHOOK_BACKOFF_SECONDS", 30)
GPUCLOUD_WEBHOOK_TIMEOUT_SECONDS = env_int("GPUCLOUD_WEBHOOK_TIMEOUT_SECONDS", 10)
GPUCLOUD_WEBHOOK_ALLOW_LOOPBACK = env_bool("GPUCLOUD_WEBHOOK_ALLOW_LOOPBACK", default=False)
GPUCLOUD_WEBHOOKS_PER_USER = env_int("GPUCLOUD_WEBHOOKS_PER_USER", 10)

# "nvml": real GPUs only; "simulated": the declared inventory; "auto": NVML where a
# driver answers, else the simulated inventory.
GPUCLOUD_GPU_SOURCE = env("GPUCLOUD_GPU_SOURCE", "auto")
_DEFAULT_SIMULATED = [
    {"index": 0, "name": "NVIDIA GeForce RTX 5090", "sku": "rtx-5090", "memory_mb": 32607},
    {
        "index": 1,
        "name": "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
        "sku": "rtx-pro-6000",
        "memory_mb": 97887,
    },
]
GPUCLOUD_SIMULATED_GPUS = json.loads(env("GPUCLOUD_SIMULATED_GPUS", json.dumps(_DEFAULT_SIMULATED)))

# GPU health (instances.services.health): how often each host's worker reads its GPUs
# while rented (every rental is also checked before its container is made).
GPUCLOUD_GPU_HEALTH_SECONDS = env_int("GPUCLOUD_GPU_HEALTH_SECONDS", 30)
# The operator's policy: faults that stop the instance on the GPU and credit its customer
# from the fault's first sign ("xid": every critical XID). Any other fault found
# (thermal, power or HW slowdown, temperature, pending page retirement or row remap)
# quarantines the GPU and warns its customer, who keeps running.
GPUCLOUD_GPU_FAULT_STOP = env_list("GPUCLOUD_GPU_FAULT_STOP", "not-answering,xid,ecc-uncorrectable,row-remap-failure")
# "temperature-high" when a GPU is this close (°C) to its slowdown threshold or over it.
GPUCLOUD_GPU_TEMPERATURE_MARGIN_C = env_int("GPUCLOUD_GPU_TEMPERATURE_MARGIN_C", 0)
# Faults the simulated inventory reports (`manage.py simulate_gpu_fault` writes it).
GPUCLOUD_SIMULATED_GPU_FAULTS_FILE = Path(
    env("GPUCLOUD_SIMULATED_GPU_FAULTS_FILE", str(VAR_DIR / "simulated-gpu-faults.json"))
)

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

# Billing
# Stripe.js must come from Stripe (PCI); tests point this at localstripe's stand-in.
GPUCLOUD_STRIPE_JS_URL = env("GPUCLOUD_STRIPE_JS_URL", "https://js.stripe.com/v3/")
# Billed-so-far per instance on the customer pages (keeps instances/ free of billing imports).
GPUCLOUD_INSTANCE_COSTS = env("GPUCLOUD_INSTANCE_COSTS", "billing.web.instance_costs")
# Checks a launch or start must pass (dotted paths, like AUTH_PASSWORD_VALIDATORS): by
# default the balance must cover GPUCLOUD_MIN_BALANCE_MINUTES of every GPU held plus the
# new one (402), the per-user limits below (409) and the customer's own spend caps (409).
GPUCLOUD_ADMISSION_CHECKS = env_list(
    "GPUCLOUD_ADMISSION_CHECKS",
    "billing.checks.balance_covers_launch,billing.checks.limits_allow_launch,billing.checks.spend_cap_allows_launch",
)
# Token authentications and instance lists kept in each web process, exact by versions
# in Redis (instances.cache); only with REDIS_URL.
GPUCLOUD_API_CACHE = env_bool("GPUCLOUD_API_CACHE", default=True)
GPUCLOUD_STORAGE_RATE_PER_GB_MONTH = Decimal(env("GPUCLOUD_STORAGE_RATE_PER_GB_MONTH", "0.05"))
# Snapshots are billed per GiB-month of their stored (compressed) size.
GPUCLOUD_SNAPSHOT_RATE_PER_GB_MONTH = Decimal(env("GPUCLOUD_SNAPSHOT_RATE_PER_GB_MONTH", "0.05"))
GPUCLOUD_MIN_BALANCE_MINUTES = env_int("GPUCLOUD_MIN_BALANCE_MINUTES", 10)
# Per-user limits on what one customer holds at once (0: none); an operator overrides them
# per user in admin -> User limits (billing.models.UserLimits).
GPUCLOUD_LIMIT_INSTANCES = env_int("GPUCLOUD_LIMIT_INSTANCES", 8)
GPUCLOUD_LIMIT_GPUS = env_int("GPUCLOUD_LIMIT_GPUS", 8)
GPUCLOUD_LIMIT_SPEND_PER_HOUR_USD = Decimal(env("GPUCLOUD_LIMIT_SPEND_PER_HOUR_USD", "50"))
GPUCLOUD_NEGATIVE_GRACE_SECONDS = env_int("GPUCLOUD_NEGATIVE_GRACE_SECONDS", 300)
GPUCLOUD_TOPUP_MIN_USD = Decimal(env("GPUCLOUD_TOPUP_MIN_USD", "5"))
GPUCLOUD_TOPUP_MAX_USD = Decimal(env("GPUCLOUD_TOPUP_MAX_USD", "5000"))
# A low-balance email goes out once each time the balance falls below one of these.
GPUCLOUD_LOW_BALANCE_THRESHOLDS_USD = [Decimal(v) for v in env_list("GPUCLOUD_LOW_BALANCE_THRESHOLDS_USD", "10,5,1")]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # At DEBUG the Stripe SDK logs every response body: PaymentIntents' client_secret.
        "stripe": {"level": "INFO"},
    },
}

# Periodic jobs (django-celery-beat's DatabaseScheduler installs these; operators can
# tune them in the admin). Fan-out tasks run on the "default" queue and enqueue one
# task per host on `host.<name>`; every worker consumes its host queue and "default".
CELERY_BEAT_SCHEDULE = {
    "reconcile-hosts": {"task": "instances.tasks.reconcile_all_hosts", "schedule": float(GPUCLOUD_RECONCILE_SECONDS)},
    "gpu-metrics": {"task": "instances.tasks.gpu_metrics_all_hosts", "schedule": float(GPUCLOUD_METRICS_SECONDS)},
    "gpu-health": {"task": "instances.tasks.gpu_health_all_hosts", "schedule": float(GPUCLOUD_GPU_HEALTH_SECONDS)},
    "gpu-fault-credits": {"task": "billing.tasks.gpu_fault_credits", "schedule": float(GPUCLOUD_METER_SECONDS)},
    "workspace-cleanup": {"task": "instances.tasks.workspace_cleanup_all_hosts", "schedule": 300.0},
    "workspace-usage": {
        "task": "instances.tasks.workspace_upkeep_all_hosts",
        "schedule": float(GPUCLOUD_WORKSPACE_USAGE_SECONDS),
    },
    "meter-usage": {"task": "billing.tasks.meter_usage", "schedule": float(GPUCLOUD_METER_SECONDS)},
    "enforce-balances": {"task": "billing.tasks.enforce_balances", "schedule": 60.0},
    "host-preflight": {"task": "instances.tasks.preflight_all_hosts", "schedule": 3600.0},
    "waitlist-grant": {"task": "instances.tasks.waitlist_grant_all", "schedule": float(GPUCLOUD_WAITLIST_SECONDS)},
    "launch-keys-expire": {"task": "instances.tasks.launch_keys_expire", "schedule": 3600.0},
    "idle-check": {"task": "instances.tasks.idle_check_all_hosts", "schedule": float(GPUCLOUD_IDLE_CHECK_SECONDS)},
}
if GPUCLOUD_IMAGES_WARM_SECONDS:
    CELERY_BEAT_SCHEDULE["images-warm"] = {
        "task": "instances.tasks.images_warm_all_hosts",
        "schedule": float(GPUCLOUD_IMAGES_WARM_SECONDS),
    }

# dj-stripe's shipped migrations build its schema in three steps whose middle one removes
# 514 fields (its 2.9 -> 2.10 upgrade): two thirds of a fresh database's migrate time.
# gpucloud/migrations/djstripe holds the same three squashed into one (Django's squashing,
# `replaces`): a fresh database makes the final schema at once; a database that applied
# the three counts the squash as applied. tests/gpucloud/test_migrations.py checks it
# replaces exactly the migrations the installed dj-stripe ships.
MIGRATION_MODULES = {"djstripe": "gpucloud.migrations.djstripe"}
