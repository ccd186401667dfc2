"""Writes of the instances app (`from instances.services import ...`).

- requests: what customers, operators and billing call (launch, stop, start, restart,
  destroy): validate, change the row, enqueue the worker on commit;
- worker: what the host's worker does with Docker (provision, start, stop, destroy);
- housekeeping: the reconciler, GPU metrics, workspace cleanup.
"""

from __future__ import annotations

from instances.services.common import InstanceBusy, event_add
from instances.services.housekeeping import ReconcileReport, gpu_metrics_refresh, host_reconcile, workspace_cleanup
from instances.services.requests import (
    instance_destroy,
    instance_launch,
    instance_restart,
    instance_start,
    instance_stop,
)
from instances.services.worker import (
    container_spec,
    instance_destroy_execute,
    instance_give_up,
    instance_provision,
    instance_start_execute,
    instance_stop_execute,
)

__all__ = [
    "InstanceBusy",
    "ReconcileReport",
    "container_spec",
    "event_add",
    "gpu_metrics_refresh",
    "host_reconcile",
    "instance_destroy",
    "instance_destroy_execute",
    "instance_give_up",
    "instance_launch",
    "instance_provision",
    "instance_restart",
    "instance_start",
    "instance_start_execute",
    "instance_stop",
    "instance_stop_execute",
    "workspace_cleanup",
]
