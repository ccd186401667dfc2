"""Handing work to a host's worker: a task on the host's queue, sent after the commit.

Tasks are sent by name (the names below are the tasks of instances.tasks), so the
services never import the tasks module that imports them.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.db import transaction

from instances.errors import HostUnavailable, QueueUnavailable
from instances.models import Host, Instance, LaunchKey
from instances.services.events import Kind, Status, event_add, release

logger = logging.getLogger("instances.lifecycle")

PROVISION = "instances.tasks.instance_provision"
START = "instances.tasks.instance_start_task"
STOP = "instances.tasks.instance_stop_task"
DESTROY = "instances.tasks.instance_destroy_task"


def task_send(task_name: str, *, instance_id: int, queue: str) -> None:
    """Send one of the lifecycle's tasks now (raises the broker's error when it is down)."""
    current_app.send_task(task_name, kwargs={"instance_id": instance_id}, queue=queue)


WARM_IMAGES = "instances.tasks.images_warm_host"


def host_task_send(task_name: str, *, host: Host, **kwargs: Any) -> None:
    """Send a host's own task (not an instance's) to its queue now."""
    current_app.send_task(task_name, kwargs={"host_id": host.pk, **kwargs}, queue=host.queue)


def enqueue(task_name: str, instance: Instance, *, launch_source: str | None = None) -> None:
    """Send the worker's task once the row is committed.

    The broker can be down after the commit. A launch (`launch_source` set) then ends
    `failed` at once with its GPU and ports released, and QueueUnavailable (503) goes
    to the caller: no `pending` row is left holding a GPU the customer was told
    nothing about. Any other step stays in its in-between status, which the reconciler
    resends once the broker is back (reconcile._resend_stuck), so it is only logged.
    """
    if instance.host is None:  # never scheduled: there is no worker to hand it to
        raise HostUnavailable(detail={"id": instance.public_id})
    host_queue = instance.host.queue
    instance_id, public_id = instance.pk, instance.public_id

    def send() -> None:
        try:
            task_send(task_name, instance_id=instance_id, queue=host_queue)
        except Exception as exc:  # kombu's OperationalError, redis' errors: the message is not queued
            logger.warning("instance %s: %s not queued: %s", public_id, task_name, type(exc).__name__)
            if launch_source is None:
                return
            launch_abandon(instance_id=instance_id, source=launch_source)
            raise QueueUnavailable(detail={"id": public_id}) from exc

    transaction.on_commit(send)


def launch_abandon(*, instance_id: int, source: str) -> None:
    """A launch whose task never reached the broker: `failed`, GPU and ports freed, its
    idempotency key (if any) deleted."""
    reason = "the task queue was unreachable; nothing was started"
    with transaction.atomic():
        locked = Instance.objects.select_for_update(of=("self",)).get(pk=instance_id)
        if locked.status != Status.PENDING:  # the message did get through and a worker took it
            return
        release(instance=locked)
        locked.status, locked.last_error = Status.FAILED, reason
        locked.save(update_fields=["gpu", "container_id", "status", "last_error", "updated_at"])
        event_add(instance=locked, kind=Kind.FAILED, source=source, message=reason)
        # Nothing was started, and the customer was answered 503 "try again": free its
        # Idempotency-Key, so that the retry launches instead of replaying this failure.
        LaunchKey.objects.filter(instance_id=instance_id).delete()
