"""Writes of the instances app, one module per flow.

What customers, operators and billing call is exported here (`from instances.services
import instance_launch`); the worker's side, which drives Docker, is imported from its
own module by the tasks, so the web process never loads the Docker runtime.

- launch: validate, schedule a GPU and ports (scheduling), create the row, enqueue;
  idempotency keys of launches and their expiry; waitlist: launches waiting for a GPU;
- transitions: stop, start, restart, destroy; logs: a container's output, asked of
  its host's worker;
- provision (worker): provision, start, stop, destroy with Docker; reconcile (worker):
  make a host's rows and containers agree; upkeep (worker): GPU metrics, workspaces;
  health (worker): the GPU health gate before each rental and the watch while rented;
  quarantine: a GPU's faults, its quarantine and an operator's return to service;
- storage: growing a stopped instance's workspace (the worker grows it before its next
  mount: instances.host.workspaces);
- snapshots: take, delete, restore requests (and the launch's restore);
  snapshot_transfer (worker): workspace ↔ object store, checksummed;
- events: the timeline and running segments; settle: a row brought to rest; locks;
  queue: tasks sent to a host by name.
"""

from __future__ import annotations

from instances.services.events import event_add
from instances.services.launch import instance_launch, launch_keys_purge
from instances.services.logs import instance_logs
from instances.services.storage import instance_resize
from instances.services.transitions import instance_destroy, instance_restart, instance_start, instance_stop
from instances.services.waitlist import launch_or_queue

__all__ = [
    "event_add",
    "instance_destroy",
    "instance_launch",
    "instance_logs",
    "instance_resize",
    "instance_restart",
    "instance_start",
    "instance_stop",
    "launch_keys_purge",
    "launch_or_queue",
]
