"""The words of each notification: a subject and a few lines, from the event's data.

The same data is the webhook's JSON; the words are the email (text and HTML)."""

from __future__ import annotations

from typing import Any

from instances.notify.models import Event

STOP_REASONS = {
    "idle": "it was idle (no GPU activity and nothing connected) for its whole idle window",
    "max-runtime": "it reached its maximum runtime",
    "billing": "the balance was exhausted",
}


def _minutes(seconds: Any) -> str:
    seconds = int(seconds or 0)
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{round(seconds / 60)} minutes"


def compose(event: str, data: dict[str, Any]) -> tuple[str, list[str]]:
    """(subject, lines) of one notification."""
    instance = data.get("instance", "")
    if event == Event.INSTANCE_RUNNING:
        return f"GPU Cloud: {instance} is running", [
            f"Your instance {instance} ({data.get('template', '')}, {data.get('gpu_type', '')}) is running.",
        ]
    if event == Event.INSTANCE_FAILED:
        return f"GPU Cloud: {instance} failed", [
            f"Your instance {instance} failed: {data.get('reason') or 'no reason was given'}.",
        ]
    if event == Event.INSTANCE_STOPPED:
        code = str(data.get("reason_code", ""))
        why = STOP_REASONS.get(code.split(":")[0], data.get("reason") or code)
        return f"GPU Cloud: {instance} was stopped ({code})", [
            f"Your instance {instance} was stopped because {why}.",
            "Its /workspace is kept: start it again from its page or the API when you need it.",
        ]
    if event in (Event.IDLE_WARNING, Event.RUNTIME_WARNING):
        left = _minutes(data.get("seconds_left"))
        if event == Event.IDLE_WARNING:
            subject = f"GPU Cloud: {instance} stops in {left} (idle)"
            first = (
                f"Your instance {instance} has been idle: GPU utilization under "
                f"{data.get('gpu_threshold_percent')}% and nothing connected. It stops in {left} "
                f"(at {data.get('stop_at')} UTC), its data kept, unless it is used or kept alive."
            )
            action = f"Keep it alive on its page, or: POST /api/gpu/instances/{instance}/keep-alive"
        else:
            subject = f"GPU Cloud: {instance} stops in {left} (maximum runtime)"
            first = (
                f"Your instance {instance} reaches its maximum runtime in {left} "
                f"(at {data.get('stop_at')} UTC) and then stops, its data kept."
            )
            action = "Raise or clear its maximum runtime on its page, or with PATCH /api/gpu/instances/…/idle."
        return subject, [first, action]
    if event == Event.LOW_BALANCE:
        return f"GPU Cloud: your balance is below ${data.get('threshold_usd')}", [
            f"Your GPU Cloud balance is ${data.get('balance_usd')}, below ${data.get('threshold_usd')}.",
            "Running instances are stopped (their data kept) when the balance reaches zero. "
            "Top up on the billing page to keep them running.",
        ]
    if event == Event.TOPUP_RECEIVED:
        return f"GPU Cloud: top-up of ${data.get('amount_usd')} received", [
            f"Your top-up of ${data.get('amount_usd')} was credited to your balance.",
        ]
    return f"GPU Cloud: {event}", [str(data)]
