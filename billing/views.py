"""The customer's billing page: balance, top-up through Stripe, usage and ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Sum
from django.db.models.functions import TruncMonth
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from billing import selectors, services
from billing.errors import BillingError


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    usage = selectors.usage_list(user=request.user)
    months = (
        usage.order_by()
        .annotate(month=TruncMonth("started_at"))
        .values("month", "kind")
        .annotate(segments=Count("id"), seconds=Sum("duration_seconds"), cost=Sum("billed_usd"))
        .order_by("-month", "kind")
    )
    return {
        "balance": selectors.balance_get(user=request.user),
        "usage": usage[:50],
        "months": [{**m, "hours": Decimal(m["seconds"] or 0) / 3600} for m in months],
        "ledger": selectors.ledger_list(user=request.user)[:50],
        "limits": selectors.limits_summary(user=request.user, now=timezone.now()),
        "topup_min": settings.GPUCLOUD_TOPUP_MIN_USD,
        "topup_max": settings.GPUCLOUD_TOPUP_MAX_USD,
        "amount": extra.pop("amount", Decimal("20.00")),
        **extra,
    }


@login_required
@require_GET
def billing(request: HttpRequest) -> HttpResponse:
    return render(request, "billing/billing.html", _context(request))


@login_required
@require_GET
def balance_partial(request: HttpRequest) -> HttpResponse:
    return render(request, "billing/_balance.html", {"balance": selectors.balance_get(user=request.user)})


@login_required
@require_POST
def topup(request: HttpRequest) -> HttpResponse:
    """Create the PaymentIntent for the chosen amount, then show the card step."""
    amount = request.POST.get("amount_usd", "").strip()
    try:
        intent = services.topup_create(user=request.user, amount_usd=amount)
        setup_secret = services.topup_card_setup(user=request.user)
    except BillingError as exc:
        return render(request, "billing/billing.html", _context(request, error=exc, amount=amount), status=exc.status)
    publishable = settings.STRIPE_LIVE_PUBLIC_KEY if settings.STRIPE_LIVE_MODE else settings.STRIPE_TEST_PUBLIC_KEY
    return render(
        request,
        "billing/topup_card.html",
        {
            "intent": intent,
            "setup_secret": setup_secret,
            "amount_usd": Decimal(intent.amount_cents) / 100,
            "publishable_key": publishable,
            "stripe_js_url": settings.GPUCLOUD_STRIPE_JS_URL,
        },
    )


@login_required
@require_POST
def topup_pay(request: HttpRequest, payment_intent_id: str) -> JsonResponse:
    """The page's card was saved at Stripe: confirm the top-up with it (JSON for the page)."""
    try:
        intent = services.topup_pay(
            user=request.user,
            payment_intent_id=payment_intent_id,
            payment_method=request.POST.get("payment_method", ""),
        )
    except BillingError as exc:
        return JsonResponse({"error": {"code": exc.code, "message": exc.message}}, status=exc.status)
    return JsonResponse({"status": intent.status, "client_secret": intent.client_secret})


@login_required
@require_POST
def limits_set(request: HttpRequest) -> HttpResponse:
    """Set the customer's daily and monthly spend caps (blank: none); the page again
    with the error (400) when an amount is refused."""
    caps = {name: request.POST.get(name, "") for name in ("daily_cap_usd", "monthly_cap_usd")}
    try:
        services.spend_caps_set(user=request.user, caps=caps)
    except BillingError as exc:
        return render(request, "billing/billing.html", _context(request, error=exc), status=exc.status)
    messages.success(request, "Spend caps saved.")
    return redirect("billing-web:billing")
