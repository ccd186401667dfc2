"""Enforcement: stop the instances of users whose balance stayed at or below zero, and
send the low-balance emails that are due."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import BillingAccount
from billing.services.ledger import money
from gpucloud.errors import DomainError
from instances.models import Instance, InstanceEvent
from instances.notify.models import Event
from instances.notify.services import notify
from instances.services import instance_stop

logger = logging.getLogger("billing")


@dataclass
class EnforceResult:
    stopped: list[str]
    emailed: list[str]


def balances_enforce(*, now: datetime | None = None, stop: Callable[..., Any] | None = None) -> EnforceResult:
    """Stop the running instances of users whose balance has been at or below zero for
    GPUCLOUD_NEGATIVE_GRACE_SECONDS (data kept; the stop event says why), and send the
    low-balance emails that are due.

    `stop` defaults to instances.services.instance_stop (enqueues the stop on the host).
    An instance whose stop is refused (a race with its owner) is skipped and logged.
    """
    now = now or timezone.now()
    stop = stop or instance_stop
    grace = timedelta(seconds=settings.GPUCLOUD_NEGATIVE_GRACE_SECONDS)
    with transaction.atomic():
        BillingAccount.objects.filter(balance_usd__lte=0, depleted_since__isnull=True).update(depleted_since=now)
        BillingAccount.objects.filter(balance_usd__gt=0, depleted_since__isnull=False).update(depleted_since=None)
    due = BillingAccount.objects.filter(balance_usd__lte=0, depleted_since__lte=now - grace).values("user_id")
    stopped = _running_stop(owner_ids=due, reason="balance exhausted", stop=stop)
    return EnforceResult(stopped=stopped, emailed=low_balance_notify())


def account_instances_stop(*, user_id: int, reason: str, stop: Callable[..., Any] | None = None) -> list[str]:
    """Stop every running instance of one user (data kept), as billing, with `reason` on
    the stop event. Used when a payment is disputed: the money behind the balance is gone.

    Enqueues one stop per instance on its host; one refused stop (a race with its owner)
    is logged and skipped. Returns the public ids of the instances asked to stop.
    """
    return _running_stop(owner_ids=[user_id], reason=reason, stop=stop or instance_stop)


def _running_stop(*, owner_ids: Any, reason: str, stop: Callable[..., Any]) -> list[str]:
    stopped = []
    for instance in Instance.objects.filter(owner_id__in=owner_ids, status=Instance.Status.RUNNING).select_related(
        "owner"
    ):
        try:
            stop(instance=instance, source=InstanceEvent.Source.BILLING, reason=reason)
        except DomainError as exc:  # one instance's refusal (a race with the user) must not spare the others
            logger.info("billing stop of %s refused: %s", instance.public_id, exc.code)
            continue
        logger.info("stopped %s of user %s: %s", instance.public_id, instance.owner_id, reason)
        stopped.append(instance.public_id)
    return stopped


def _thresholds() -> list[Decimal]:
    return sorted(Decimal(t) for t in settings.GPUCLOUD_LOW_BALANCE_THRESHOLDS_USD)


def low_balance_notify() -> list[str]:
    """Email a user once each time their balance falls below a threshold; a top-up above
    it re-arms it. The claim is a conditional UPDATE, so two runs never both send.
    Returns the addresses emailed (sending fails silently)."""
    thresholds = _thresholds()
    if not thresholds:
        return []
    candidates = BillingAccount.objects.filter(
        Q(balance_usd__lt=thresholds[-1]) | Q(low_balance_notified_usd__isnull=False)
    ).select_related("user")
    emailed = []
    for account in candidates:
        below = [t for t in thresholds if account.balance_usd < t]
        crossed = below[0] if below else None
        previous = account.low_balance_notified_usd
        if crossed == previous:
            continue
        same = Q(low_balance_notified_usd__isnull=True) if previous is None else Q(low_balance_notified_usd=previous)
        claimed = BillingAccount.objects.filter(same, pk=account.pk).update(low_balance_notified_usd=crossed)
        if claimed and crossed is not None and (previous is None or crossed < previous) and account.user.email:
            _low_balance_email(account=account, threshold=crossed)
            emailed.append(account.user.email)
    return emailed


def _low_balance_email(*, account: BillingAccount, threshold: Decimal) -> None:
    # Through the customer's notification preferences: email and/or webhooks.
    notify(
        user=account.user,
        event=Event.LOW_BALANCE,
        data={"balance_usd": str(money(account.balance_usd)), "threshold_usd": str(threshold)},
    )
