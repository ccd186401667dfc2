"""The worker makes sure a template's image is on its host before it creates a
container: pulled from the registry when missing, its progress on the instance's
timeline and in its `progress` field ("pulling 2.1 of 7.9 GB").

Pull time is never billed: this runs before the container starts, and the GPU segment
opens at the container's start (provision._billing_begin). Two pulls of one image on
one host (two launches, or a launch and a warm-up) pull it once: the pull holds a lock
named after the host and the image, and whoever waited for it finds the image present.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.errors import RuntimeFailure
from instances.host.images import PullProgress, size_text
from instances.host.runtime import DockerRuntime
from instances.models import Host, Instance
from instances.registries import registry_auth_for
from instances.registry_models import HostImage
from instances.services.events import Kind, Source, event_add, logger
from instances.services.locks import lock_acquire, lock_release
from templates_app.models import Template

# (message, data, progress): what a pull tells its instance; a warm-up tells no one.
Report = Callable[[str, dict[str, int] | None, str], None]


def image_pull_lock_name(*, host: str, image: str) -> str:
    return f"image-pull:{host}:{image}"


def _silent(message: str, data: dict[str, int] | None, progress: str) -> None:
    return None


def image_pull(*, host: Host, template: Template, runtime: DockerRuntime, report: Report = _silent) -> bool:
    """Pull the template's image onto `host` unless it is there; True when this call pulled.

    Holds the host's lock of that image while it pulls. Raises RuntimeFailure with the
    registry's reason, or when another pull of the image holds the lock past
    GPUCLOUD_PULL_WAIT_SECONDS.
    """
    image = template.image
    if runtime.image_exists(image):
        return False
    name, ttl = image_pull_lock_name(host=host.name, image=image), settings.GPUCLOUD_PULL_WAIT_SECONDS + 60
    held = lock_acquire(name=name, ttl_seconds=ttl)
    if held is None:
        report(f"waiting for another pull of {image} on this host", None, "")
        held = lock_acquire(name=name, wait_seconds=settings.GPUCLOUD_PULL_WAIT_SECONDS, ttl_seconds=ttl)
        if held is None:
            raise RuntimeFailure(f"another pull of {image} did not finish in time")
    try:
        if runtime.image_exists(image):  # pulled by the one we waited for
            return False
        _pull(template=template, runtime=runtime, report=report)
        return True
    finally:
        lock_release(held=held)


def _pull(*, template: Template, runtime: DockerRuntime, report: Report) -> None:
    image = template.image
    report(f"pulling {image}", None, "pulling")
    progress, last = PullProgress(), 0.0
    for message in runtime.pull(image, auth=registry_auth_for(template=template)):
        if progress.add(message) and time.monotonic() - last >= settings.GPUCLOUD_PULL_PROGRESS_SECONDS:
            last = time.monotonic()
            report(progress.text(), progress.data(), progress.text())
    done = size_text(done=progress.done_bytes, total=progress.total_bytes)
    report(f"pulled {image} ({done})", progress.data(), "")
    logger.info("pulled %s (%s)", image, done)


def image_ensure(*, instance: Instance, runtime: DockerRuntime) -> None:
    """Pull the instance's template image onto its host unless it is there, and note it
    used (admin → Host images).

    Side effects: `pulling` events (at most one per GPUCLOUD_PULL_PROGRESS_SECONDS while
    bytes move), the row's `progress` set during the pull and cleared after. Raises
    RuntimeFailure as image_pull does.
    """
    assert instance.host is not None  # noqa: S101 (provisioning rows hold a host)

    def report(message: str, data: dict[str, int] | None, progress: str) -> None:
        with transaction.atomic():
            Instance.objects.filter(pk=instance.pk).update(progress=progress)
            event_add(instance=instance, kind=Kind.PULLING, source=Source.WORKER, message=message, data=data)

    try:
        image_pull(host=instance.host, template=instance.template, runtime=runtime, report=report)
    except SoftTimeLimitExceeded as exc:
        # The pull runs inside the provisioning task: past its soft limit the launch ends
        # `failed` and frees its GPU (the hard limit would leave the row provisioning).
        Instance.objects.filter(pk=instance.pk).update(progress="")
        raise RuntimeFailure(
            f"pull {instance.template.image}: not finished within the task's time limit "
            f"({settings.CELERY_TASK_SOFT_TIME_LIMIT} s, CELERY_TASK_SOFT_TIME_LIMIT)"
        ) from exc
    except Exception:  # refused or interrupted: no stale progress on the row
        Instance.objects.filter(pk=instance.pk).update(progress="")
        raise
    HostImage.objects.update_or_create(
        host=instance.host,
        image=instance.template.image,
        defaults={"present": True, "last_used_at": timezone.now(), "error": ""},
    )
