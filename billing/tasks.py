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


@shared_task(name="billing.tasks.gpu_fault_credits")
def gpu_fault_credits() -> int:
    """Credit the GPU segments a GPU fault cut short (billing.services.fault_credits)."""
    return len(services.gpu_fault_credits_post())
