"""Celery entry points of billing (beat): a few lines each, each safe to repeat or skip."""

from __future__ import annotations

from celery import shared_task

from billing import services


@shared_task(name="billing.tasks.meter_usage")
def meter_usage() -> dict:
    result = services.meter_run()
    return {"ran": result.ran, "opened": result.opened, "closed": result.closed, "entries": result.entries}


@shared_task(name="billing.tasks.enforce_balances")
def enforce_balances() -> dict:
    result = services.balances_enforce()
    return {"stopped": result.stopped, "emailed": len(result.emailed)}
