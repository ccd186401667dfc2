"""An instance's logs, for the web process: asked of the worker on the instance's host.

The web process never touches a host (DESIGN.md): the container's output is read by
instances.tasks.instance_logs_tail on the host's queue (`host.<name>`), and the web
process waits for its answer through Celery's result backend. This module imports
nothing of Docker; the bounds below are applied on both sides.
"""

from __future__ import annotations

from celery import current_app
from celery.exceptions import TimeoutError as ResultTimeout
from django.conf import settings

from instances.errors import HostUnavailable
from instances.models import Instance

LOGS_TASK = "instances.tasks.instance_logs_tail"
LOG_LINES_MAX = 1000
LOG_BYTES_MAX = 256 * 1024
# Statuses in which the instance may have a container whose output can be read.
_WITH_CONTAINER = (
    Instance.Status.PROVISIONING,
    Instance.Status.RUNNING,
    Instance.Status.STOPPING,
    Instance.Status.STARTING,
)


def logs_lines(lines: int) -> int:
    """`lines` brought within 1..LOG_LINES_MAX."""
    return max(1, min(int(lines), LOG_LINES_MAX))


def logs_bound(text: str) -> str:
    """The newest LOG_BYTES_MAX bytes (UTF-8) of `text`, starting at a whole line."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= LOG_BYTES_MAX:
        return text
    tail = data[-LOG_BYTES_MAX:]
    # Cut where a line begins: the first line of the cut would be a fragment.
    newline = tail.find(b"\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1 :]
    return tail.decode("utf-8", errors="ignore")


def instance_logs(*, instance: Instance, lines: int = 100, wait_seconds: float | None = None) -> str:
    """The last `lines` lines of the instance's container output; "" when it has none.

    Sends instances.tasks.instance_logs_tail to the host's queue and waits up to
    `wait_seconds` (default GPUCLOUD_LOGS_WAIT_SECONDS) for its answer, at most
    LOG_LINES_MAX lines and LOG_BYTES_MAX bytes. Side effect: a task message, and a
    result in the result backend (removed once read). Raises HostUnavailable (503) when
    the broker is unreachable, no worker of the host answers in time, or the host's
    container engine failed.
    """
    if instance.host is None or instance.status not in _WITH_CONTAINER:
        return ""
    wait = settings.GPUCLOUD_LOGS_WAIT_SECONDS if wait_seconds is None else wait_seconds
    detail = {"id": instance.public_id, "host": instance.host.name}
    try:
        result = current_app.send_task(
            LOGS_TASK,
            kwargs={"instance_id": instance.pk, "lines": logs_lines(lines)},
            queue=instance.host.queue,
            # A worker that comes back later drops the request nobody waits for.
            expires=wait,
        )
    except Exception as exc:  # kombu's OperationalError, redis' errors: nothing was sent
        raise HostUnavailable(detail={**detail, "reason": "the task queue is unreachable"}) from exc
    try:
        reply = result.get(timeout=wait, propagate=False)
    except ResultTimeout as exc:
        raise HostUnavailable(detail={**detail, "reason": "no answer from the host's worker"}) from exc
    finally:
        result.forget()
    if not isinstance(reply, dict) or not isinstance(reply.get("logs"), str):
        reason = reply.get("error") if isinstance(reply, dict) else type(reply).__name__
        raise HostUnavailable(detail={**detail, "reason": str(reason)})
    return logs_bound(reply["logs"])
