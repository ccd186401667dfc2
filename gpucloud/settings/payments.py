"""Stripe (dj-stripe) and billing: rates, admission checks, limits, top-ups, economics."""

from __future__ import annotations

from decimal import Decimal

from gpucloud.env import env, env_bool, env_int, env_list

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

# Operator economics (admin → Usage records → Economics): what a kWh costs and what one
# GPU's hardware costs per month (amortized; 0: not counted); power samples kept this long.
GPUCLOUD_ELECTRICITY_USD_PER_KWH = Decimal(env("GPUCLOUD_ELECTRICITY_USD_PER_KWH", "0.30"))
GPUCLOUD_HARDWARE_USD_PER_GPU_MONTH = Decimal(env("GPUCLOUD_HARDWARE_USD_PER_GPU_MONTH", "0"))
GPUCLOUD_POWER_SAMPLE_DAYS = env_int("GPUCLOUD_POWER_SAMPLE_DAYS", 400)
