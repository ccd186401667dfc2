"""The billing API under /api/billing/: balance, usage, ledger and top-ups of the caller.

Authentication and permissions are REST_FRAMEWORK's defaults (session and API tokens);
every query is scoped to request.user. Errors have the one shape (gpucloud.exceptions).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors, services
from billing.models import LedgerEntry, UsageRecord


class BalanceSerializer(serializers.Serializer):
    balance_usd = serializers.DecimalField(max_digits=14, decimal_places=2)
    currency = serializers.CharField()
    topup_min_usd = serializers.DecimalField(max_digits=10, decimal_places=2)
    topup_max_usd = serializers.DecimalField(max_digits=10, decimal_places=2)


class UsageSerializer(serializers.ModelSerializer):
    instance = serializers.CharField(source="instance.public_id")
    gpu_type = serializers.CharField(source="gpu_type.sku", default=None)
    rate_per_hour_usd = serializers.SerializerMethodField()
    cost_so_far_usd = serializers.SerializerMethodField()

    class Meta:
        model = UsageRecord
        fields = (
            "id",
            "kind",
            "instance",
            "gpu_type",
            "gpu_name",
            "storage_gb",
            "started_at",
            "ended_at",
            "duration_seconds",
            "rate_per_hour_usd",
            "cost_usd",
            "cost_so_far_usd",
            "billed_until",
        )

    def get_rate_per_hour_usd(self, obj: UsageRecord) -> str:
        return str(obj.rate_per_hour.quantize(Decimal("0.000001")))

    def get_cost_so_far_usd(self, obj: UsageRecord) -> str:
        return str(services.money(obj.billed_usd))


class LedgerSerializer(serializers.ModelSerializer):
    amount_usd = serializers.SerializerMethodField()
    usage: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = LedgerEntry
        fields = ("id", "at", "kind", "amount_usd", "amount_exact_usd", "reason", "usage", "stripe_id")

    amount_exact_usd = serializers.DecimalField(source="amount_usd", max_digits=24, decimal_places=12, read_only=True)

    def get_amount_usd(self, obj: LedgerEntry) -> str:
        return str(services.money(obj.amount_usd))


class LimitsSerializer(serializers.Serializer):
    max_instances = serializers.IntegerField(
        help_text="GPU-holding instances at once (0: no limit); set by the operator."
    )
    max_gpus = serializers.IntegerField(help_text="GPUs held at once (0: no limit); set by the operator.")
    max_spend_per_hour_usd = serializers.DecimalField(
        max_digits=12, decimal_places=2, help_text="Sum of the hourly rates held at once (0: no limit)."
    )
    daily_cap_usd = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    monthly_cap_usd = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    spent_today_usd = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="Since 00:00 UTC.")
    spent_this_month_usd = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="Since the 1st, UTC.")


class LimitsInputSerializer(serializers.Serializer):
    daily_cap_usd = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="USD per UTC day; null or blank: no cap."
    )
    monthly_cap_usd = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="USD per UTC month; null or blank: no cap."
    )


class TopupInputSerializer(serializers.Serializer):
    amount_usd = serializers.CharField(help_text="US dollars, e.g. `20.00`.")


class TopupSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The Stripe PaymentIntent id.")
    client_secret = serializers.CharField(help_text="For Stripe.js `confirmCardPayment`.")
    amount_usd = serializers.DecimalField(max_digits=10, decimal_places=2)
    currency = serializers.CharField()
    status = serializers.CharField()
    publishable_key = serializers.CharField()


class BalanceView(APIView):
    @extend_schema(responses=BalanceSerializer)
    def get(self, request: Request) -> Response:
        balance = selectors.balance_get(user=request.user)
        data = {
            "balance_usd": services.money(balance),
            "currency": "usd",
            "topup_min_usd": settings.GPUCLOUD_TOPUP_MIN_USD,
            "topup_max_usd": settings.GPUCLOUD_TOPUP_MAX_USD,
        }
        return Response(BalanceSerializer(data).data)


@extend_schema(parameters=[OpenApiParameter("month", str, description="YYYY-MM: segments started in that month.")])
class UsageListView(ListAPIView):
    serializer_class = UsageSerializer

    def get_queryset(self):
        return selectors.usage_list(user=self.request.user, month=self.request.query_params.get("month"))


class LedgerListView(ListAPIView):
    serializer_class = LedgerSerializer

    def get_queryset(self):
        return selectors.ledger_list(user=self.request.user)


class TopupCreateView(APIView):
    @extend_schema(request=TopupInputSerializer, responses={201: TopupSerializer})
    def post(self, request: Request) -> Response:
        payload = TopupInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        intent = services.topup_create(user=request.user, amount_usd=payload.validated_data["amount_usd"])
        publishable = settings.STRIPE_LIVE_PUBLIC_KEY if settings.STRIPE_LIVE_MODE else settings.STRIPE_TEST_PUBLIC_KEY
        data = {
            "id": intent.id,
            "client_secret": intent.client_secret,
            "amount_usd": Decimal(intent.amount_cents) / 100,
            "currency": intent.currency,
            "status": intent.status,
            "publishable_key": publishable,
        }
        return Response(TopupSerializer(data).data, status=status.HTTP_201_CREATED)


class LimitsView(APIView):
    """The caller's limits and spend caps. Once GPU and storage charges since the start
    of the UTC day (month) reach a cap, launches and starts answer 409
    `billing:spend-cap-reached`; running instances keep running."""

    def _summary(self, request: Request) -> Response:
        summary = selectors.limits_summary(user=request.user, now=timezone.now())
        return Response(LimitsSerializer(summary).data)

    @extend_schema(responses=LimitsSerializer)
    def get(self, request: Request) -> Response:
        return self._summary(request)

    @extend_schema(request=LimitsInputSerializer, responses=LimitsSerializer)
    def patch(self, request: Request) -> Response:
        payload = LimitsInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        services.spend_caps_set(user=request.user, caps=dict(payload.validated_data))
        return self._summary(request)
