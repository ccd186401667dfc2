"""Writes of the instances app, one module per flow (`from instances.services import ...`).

- launch: validate, schedule a GPU and ports (scheduling), create the row, enqueue;
- transitions: stop, start, restart, destroy as customers, operators and billing ask;
- provision: what the host's worker does with Docker (provision, start, stop, destroy);
- reconcile: make a host's rows and containers agree; upkeep: GPU metrics, workspaces;
- events: the timeline and running segments; locks; queue: tasks sent to a host;
- logs: a container's output, asked of its host's worker.
"""

from __future__ import annotations

from instances.services.events import event_add
from instances.services.launch import instance_launch
from instances.services.logs import instance_logs
from instances.services.provision import (
    container_spec,
    instance_destroy_execute,
    instance_give_up,
    instance_provision,
    instance_start_execute,
    instance_stop_execute,
)
from instances.services.reconcile import ReconcileReport, host_reconcile
from instances.services.transitions import instance_destroy, instance_restart, instance_start, instance_stop
from instances.services.upkeep import gpu_metrics_refresh, workspace_cleanup

__all__ = [
    "ReconcileReport",
    "container_spec",
    "event_add",
    "gpu_metrics_refresh",
    "host_reconcile",
    "instance_destroy",
    "instance_destroy_execute",
    "instance_give_up",
    "instance_launch",
    "instance_logs",
    "instance_provision",
    "instance_restart",
    "instance_start",
    "instance_start_execute",
    "instance_stop",
    "instance_stop_execute",
    "workspace_cleanup",
]
