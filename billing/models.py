"""Billing: usage segments, the ledger, per-user accounts and the GPU price history.

Money is Decimal. A user's balance is the sum of their ledger; `BillingAccount.balance_usd`
caches that sum and is moved in the same transaction as every ledger insert (see
billing.services.ledger and .metering), so reads and enforcement never aggregate the whole ledger.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from instances.models import GpuType, Instance, InstanceEvent

# Storage is priced per GB per month; a billing month is 30 days of seconds.
SECONDS_PER_MONTH = 30 * 24 * 3600
SECONDS_PER_HOUR = 3600
GPU_MINIMUM_SECONDS = 60


class BillingAccount(models.Model):
    """One per user: the cached balance, the Stripe customer and enforcement state."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="billing_account")
    balance_usd = models.DecimalField(max_digits=24, decimal_places=12, default=Decimal(0))
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    # When the balance was first seen at or below zero; cleared once it is positive again.
    depleted_since = models.DateTimeField(null=True, blank=True)
    # The lowest low-balance threshold already emailed about; re-armed when the balance rises.
    low_balance_notified_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("user__username",)

    def __str__(self) -> str:
        return f"{self.user} (${self.balance_usd:.2f})"


class GpuRate(models.Model):
    """Price history of a GPU type, so a segment is priced at the rate in force when it opened."""

    gpu_type = models.ForeignKey(GpuType, on_delete=models.CASCADE, related_name="rate_history")
    rate_per_hour = models.DecimalField(max_digits=10, decimal_places=4)
    effective_at = models.DateTimeField()

    class Meta:
        ordering = ("gpu_type", "-effective_at")
        indexes = [models.Index(fields=["gpu_type", "effective_at"], name="gpurate_type_effective")]

    def __str__(self) -> str:
        return f"{self.gpu_type.sku} ${self.rate_per_hour}/h from {self.effective_at:%Y-%m-%d %H:%M:%S}"


class UsageRecord(models.Model):
    """A billed segment: a GPU run (one per `started` event), a stopped instance's storage
    (one per `ended` event) or a stored snapshot (one per `snapshot-ready` event).

    cost = rate_usd * max(minimum_seconds, seconds) / rate_period_seconds, rounded half-up to
    the cent once, when the segment closes. While open, `billed_micro_usd` (`billed_usd` in
    USD) is what the ledger holds for it up to the `billed_seconds` watermark (`billed_until`).
    """

    class Kind(models.TextChoices):
        GPU = "gpu", "GPU"
        STORAGE = "storage", "Storage"
        SNAPSHOT = "snapshot", "Snapshot"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    instance = models.ForeignKey(Instance, on_delete=models.PROTECT, related_name="usage_records")
    # Indexed by usage_user_started; a second index on user alone would only slow the meter.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="usage_records", db_index=False
    )
    gpu_type = models.ForeignKey(GpuType, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    gpu_name = models.CharField(max_length=128, blank=True)
    storage_gb = models.PositiveIntegerField(null=True, blank=True)
    start_event = models.OneToOneField(InstanceEvent, on_delete=models.PROTECT, related_name="usage_record")
    end_event = models.ForeignKey(InstanceEvent, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    # GPU: the hourly rate (period 3600 s). Storage: storage_gb * $/GB-month (period 30 days).
    rate_usd = models.DecimalField(max_digits=16, decimal_places=6)
    rate_period_seconds = models.PositiveIntegerField()
    minimum_seconds = models.PositiveIntegerField(default=0)
    billed_until = models.DateTimeField()
    billed_usd = models.DecimalField(max_digits=24, decimal_places=12, default=Decimal(0))
    # The meter's integer watermark and what the ledger holds for the segment (micro-dollars):
    # its arithmetic is integer on both databases; the two fields above show the same in USD.
    billed_seconds = models.PositiveBigIntegerField(default=0)
    billed_micro_usd = models.BigIntegerField(default=0)
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-started_at", "-id")
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["gpu", "storage", "snapshot"]), name="usage_kind_valid"),
            models.CheckConstraint(condition=Q(billed_until__gte=models.F("started_at")), name="usage_watermark_valid"),
            models.CheckConstraint(condition=Q(rate_period_seconds__gt=0), name="usage_period_positive"),
        ]
        indexes = [
            models.Index(fields=["user", "-started_at"], name="usage_user_started"),
            models.Index(fields=["id"], condition=Q(closed_at__isnull=True), name="usage_open"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.instance_id} from {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def rate_per_hour(self) -> Decimal:
        return self.rate_usd * SECONDS_PER_HOUR / self.rate_period_seconds


class LedgerEntry(models.Model):
    """One movement of money: credits are positive, charges negative. Append-only."""

    class Kind(models.TextChoices):
        TOPUP = "topup", "Top-up"
        GPU_USAGE = "gpu-usage", "GPU usage"
        STORAGE = "storage", "Storage"
        SNAPSHOT = "snapshot", "Snapshot storage"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Operator adjustment"
        DISPUTE = "dispute", "Dispute (chargeback)"
        GPU_FAULT = "gpu-fault", "GPU fault credit"

    # Every meter run appends an entry per open segment: each index here is paid per entry,
    # so there is none that another covers (user: ledger_user_at) and none of LIKE patterns.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount_usd = models.DecimalField(max_digits=24, decimal_places=12)
    idempotency_key = models.CharField(max_length=200)  # unique: ledger_idempotency_key_unique
    at = models.DateTimeField(default=timezone.now)
    usage = models.ForeignKey(UsageRecord, on_delete=models.PROTECT, null=True, blank=True, related_name="entries")
    # The PaymentIntent (top-up), Refund or Dispute id at Stripe.
    stripe_id = models.CharField(max_length=255, blank=True)
    # The top-up's PaymentIntent, on top-ups and their refunds (what is left to refund).
    payment_intent_id = models.CharField(max_length=255, blank=True)
    operator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ("-at", "-id")
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    kind__in=[
                        "topup",
                        "gpu-usage",
                        "storage",
                        "snapshot",
                        "refund",
                        "adjustment",
                        "dispute",
                        "gpu-fault",
                    ]
                ),
                name="ledger_kind_valid",
            ),
            models.UniqueConstraint(fields=["idempotency_key"], name="ledger_idempotency_key_unique"),
        ]
        indexes = [
            models.Index(fields=["user", "-at"], name="ledger_user_at"),
            models.Index(
                fields=["payment_intent_id"], name="ledger_payment_intent", condition=~Q(payment_intent_id="")
            ),
            models.Index(fields=["operator"], name="ledger_operator", condition=Q(operator__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_usd:+.2f} ({self.idempotency_key})"


class MeterMark(models.Model):
    """The highest event id that existed when a meter run began, one row per run (pruned).

    A run only looks at events above the mark of a run at least an hour older: every
    event below it was committed (no transaction stays open that long) and so already
    billed, and the events table's history stops costing each run.
    """

    at = models.DateTimeField(db_index=True)
    event_id_max = models.BigIntegerField()

    class Meta:
        ordering = ("-at",)

    def __str__(self) -> str:
        return f"meter run at {self.at:%Y-%m-%d %H:%M:%S} (events <= {self.event_id_max})"


class UserLimits(models.Model):
    """Per-user limits on what one customer may hold and spend (billing.checks).

    The operator's overrides (blank: the GPUCLOUD_LIMIT_* settings) bound how much of the
    fleet one customer can take; the customer's own daily and monthly spend caps (blank:
    none) refuse launches and starts once GPU and storage charges since the start of the
    UTC day or month reach them.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_limits")
    max_instances = models.PositiveIntegerField(
        null=True, blank=True, help_text="GPU-holding instances at once; blank: GPUCLOUD_LIMIT_INSTANCES."
    )
    max_gpus = models.PositiveIntegerField(
        null=True, blank=True, help_text="GPUs held at once; blank: GPUCLOUD_LIMIT_GPUS."
    )
    max_spend_per_hour_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Sum of the hourly rates held at once; blank: GPUCLOUD_LIMIT_SPEND_PER_HOUR_USD.",
    )
    daily_cap_usd = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="Set by the customer: usage per UTC day."
    )
    monthly_cap_usd = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="Set by the customer: usage per UTC month."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "user limits"
        constraints = [
            models.CheckConstraint(
                condition=Q(daily_cap_usd__isnull=True) | Q(daily_cap_usd__gte=0), name="limits_daily_cap_valid"
            ),
            models.CheckConstraint(
                condition=Q(monthly_cap_usd__isnull=True) | Q(monthly_cap_usd__gte=0), name="limits_monthly_cap_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"limits of {self.user}"


# Models of their own modules, registered with the app here (one line each).
from billing.economics_models import OperatorCosts  # noqa: E402, F401
from billing.fault_models import FaultCredit  # noqa: E402, F401
