"""The worker makes sure a template's image is on its host before it creates a
container: pulled from the registry when missing, its progress on the instance's
timeline and in its `progress` field ("pulling 2.1 of 7.9 GB").

Pull time is never billed: this runs before the container starts, and the GPU segment
opens at the container's start (provision._billing_begin). Two launches of one missing
image on one host pull it once: the pull holds a lock named after the host and the
image, and whoever waited for it finds the image present.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction

from instances.errors import RuntimeFailure
from instances.host.images import PullProgress, size_text
from instances.host.runtime import DockerRuntime
from instances.models import Instance
from instances.registries import registry_auth_for
from instances.services.events import Kind, Source, event_add, logger
from instances.services.locks import lock_acquire, lock_release


def image_pull_lock_name(*, host: str, image: str) -> str:
    return f"image-pull:{host}:{image}"


def _report(*, instance: Instance, message: str, data: dict[str, int] | None = None, progress: str = "") -> None:
    """A pulling event on the timeline and the row's `progress`, in one transaction."""
    with transaction.atomic():
        Instance.objects.filter(pk=instance.pk).update(progress=progress)
        event_add(instance=instance, kind=Kind.PULLING, source=Source.WORKER, message=message, data=data)


def image_ensure(*, instance: Instance, runtime: DockerRuntime) -> None:
    """Pull the instance's template image onto its host unless it is there.

    Side effects: `pulling` events (at most one per GPUCLOUD_PULL_PROGRESS_SECONDS while
    bytes move), the row's `progress` set during the pull and cleared after. Raises
    RuntimeFailure with the registry's reason when the pull fails, or when another
    launch's pull of the same image holds the lock past GPUCLOUD_PULL_WAIT_SECONDS.
    """
    image = instance.template.image
    if runtime.image_exists(image):
        return
    assert instance.host is not None  # noqa: S101 (provisioning rows hold a host)
    name = image_pull_lock_name(host=instance.host.name, image=image)
    held = lock_acquire(name=name, ttl_seconds=settings.GPUCLOUD_PULL_WAIT_SECONDS + 60)
    if held is None:
        _report(instance=instance, message=f"waiting for another launch's pull of {image}")
        held = lock_acquire(
            name=name,
            wait_seconds=settings.GPUCLOUD_PULL_WAIT_SECONDS,
            ttl_seconds=settings.GPUCLOUD_PULL_WAIT_SECONDS + 60,
        )
        if held is None:
            raise RuntimeFailure(f"another launch's pull of {image} did not finish in time")
    try:
        if runtime.image_exists(image):  # pulled by the launch we waited for
            return
        _pull(instance=instance, image=image, runtime=runtime)
    finally:
        lock_release(held=held)


def _pull(*, instance: Instance, image: str, runtime: DockerRuntime) -> None:
    _report(instance=instance, message=f"pulling {image}", progress="pulling")
    progress = PullProgress()
    last = 0.0
    try:
        for message in runtime.pull(image, auth=registry_auth_for(template=instance.template)):
            if progress.add(message) and time.monotonic() - last >= settings.GPUCLOUD_PULL_PROGRESS_SECONDS:
                last = time.monotonic()
                _report(instance=instance, message=progress.text(), data=progress.data(), progress=progress.text())
    except Exception:  # refused or interrupted: no stale progress on the row
        Instance.objects.filter(pk=instance.pk).update(progress="")
        raise
    done = size_text(done=progress.done_bytes, total=progress.total_bytes)
    _report(instance=instance, message=f"pulled {image} ({done})", data=progress.data())
    logger.info("instance %s pulled %s (%s)", instance.public_id, image, done)
