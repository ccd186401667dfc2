"""What happens to customers' instances on their own: idle stop, maximum runtime, and
the notifications (email, webhooks) that tell them."""

from __future__ import annotations

from pathlib import Path

from gpucloud.env import env, env_bool, env_int
from gpucloud.settings.core import VAR_DIR

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
