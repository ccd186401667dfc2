"""Each host's worker: its name, ports, Docker engine, workspaces and quotas, images,
preflight, GPU inventory and health, and the intervals of its periodic jobs."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from gpucloud.env import env, env_bool, env_int, env_list
from gpucloud.settings.core import VAR_DIR

# This host and its network.
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
# Fleet (instances.services.liveness): each host's worker beats every HEARTBEAT_SECONDS; a
# host whose last beat is HEARTBEAT_MISSED beats old is `unreachable` (takes nothing, bills
# nothing from its last beat) until it beats again. Placement: "spread" puts a launch on
# the least-loaded host, "pack" fills a host before the next (whole hosts stay free).
GPUCLOUD_HEARTBEAT_SECONDS = env_int("GPUCLOUD_HEARTBEAT_SECONDS", 5)
GPUCLOUD_HEARTBEAT_MISSED = env_int("GPUCLOUD_HEARTBEAT_MISSED", 6)
GPUCLOUD_PLACEMENT_POLICY = env("GPUCLOUD_PLACEMENT_POLICY", "spread")
if GPUCLOUD_PLACEMENT_POLICY not in ("spread", "pack"):
    raise ImproperlyConfigured("GPUCLOUD_PLACEMENT_POLICY must be spread or pack")
GPUCLOUD_METER_SECONDS = env_int("GPUCLOUD_METER_SECONDS", 30)
GPUCLOUD_METRICS_SECONDS = env_int("GPUCLOUD_METRICS_SECONDS", 30)

# How often beat grants the waitlist (launches that wait for a free GPU of their type).
GPUCLOUD_WAITLIST_SECONDS = env_int("GPUCLOUD_WAITLIST_SECONDS", 10)

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
