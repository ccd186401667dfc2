"""Celery entry point of webhook deliveries (on the "default" queue, any worker)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from instances.notify.services import delivery_attempt


@shared_task(bind=True, acks_late=True, max_retries=None)
def webhook_deliver(self: Any, *, delivery_id: int) -> None:
    """One attempt; a failed one is retried by Celery after the backoff the service chose."""
    wait = delivery_attempt(delivery_id=delivery_id)
    if wait is not None:
        raise self.retry(countdown=wait)
