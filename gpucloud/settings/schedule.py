"""Celery beat's periodic jobs, at the intervals the other modules set."""

from __future__ import annotations

from gpucloud.settings.hosts import (
    GPUCLOUD_GPU_HEALTH_SECONDS,
    GPUCLOUD_HEARTBEAT_SECONDS,
    GPUCLOUD_IMAGES_WARM_SECONDS,
    GPUCLOUD_METER_SECONDS,
    GPUCLOUD_METRICS_SECONDS,
    GPUCLOUD_RECONCILE_SECONDS,
    GPUCLOUD_WAITLIST_SECONDS,
    GPUCLOUD_WORKSPACE_USAGE_SECONDS,
)
from gpucloud.settings.lifecycle import GPUCLOUD_IDLE_CHECK_SECONDS

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
if GPUCLOUD_HEARTBEAT_SECONDS > 0:
    CELERY_BEAT_SCHEDULE["hosts-liveness"] = {
        "task": "instances.tasks.hosts_liveness",
        "schedule": float(GPUCLOUD_HEARTBEAT_SECONDS),
    }
if GPUCLOUD_IMAGES_WARM_SECONDS:
    CELERY_BEAT_SCHEDULE["images-warm"] = {
        "task": "instances.tasks.images_warm_all_hosts",
        "schedule": float(GPUCLOUD_IMAGES_WARM_SECONDS),
    }
