"""Operators' billing pages: balances (with credit/debit by hand), the read-only ledger,
and usage with a per user / GPU type / month summary and CSV export."""

from __future__ import annotations

import csv
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing import selectors, services
from billing.admin_economics import economics_view
from billing.errors import BillingError
from billing.models import BillingAccount, LedgerEntry, UsageRecord, UserLimits


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money history is written by services only; the admin shows it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AdjustForm(forms.Form):
    amount_usd = forms.DecimalField(
        max_digits=12, decimal_places=2, help_text="Positive credits the user, negative debits them."
    )
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3}))


@admin.register(BillingAccount)
class BillingAccountAdmin(ReadOnlyAdmin):
    list_display = ("user", "balance", "depleted_since", "low_balance_notified_usd", "stripe_customer_id", "adjust")
    search_fields = ("user__username", "user__email", "stripe_customer_id")
    list_select_related = ("user",)
    ordering = ("balance_usd",)

    @admin.display(description="Balance (USD)", ordering="balance_usd")
    def balance(self, obj: BillingAccount) -> str:
        return f"{services.money(obj.balance_usd):,.2f}"

    @admin.display(description="")
    def adjust(self, obj: BillingAccount) -> str:
        return format_html(
            '<a class="button" href="{}">Credit / debit</a>', reverse("admin:billing_adjust", args=[obj.user_id])
        )

    def get_urls(self) -> list:
        extra = [
            path(
                "adjust/<int:user_id>/",
                self.admin_site.admin_view(self.adjust_view),
                name="billing_adjust",
            )
        ]
        return extra + super().get_urls()

    def adjust_view(self, request: HttpRequest, user_id: int) -> HttpResponse:
        """Credit or debit a user with a reason; the entry records the operator."""
        if not request.user.has_perm("billing.add_ledgerentry") and not request.user.is_superuser:
            return HttpResponse(status=403)
        user = get_object_or_404(get_user_model(), pk=user_id)
        form = AdjustForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                entry = services.balance_adjust(
                    user=user,
                    amount_usd=form.cleaned_data["amount_usd"],
                    reason=form.cleaned_data["reason"],
                    operator=request.user,
                )
            except BillingError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(
                    request, f"{user}: {services.money(entry.amount_usd):+.2f} USD recorded.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:billing_billingaccount_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Credit or debit {user}",
            "form": form,
            "subject": user,
            "balance": services.money(selectors.balance_get(user=user)),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/billing/adjust.html", context)


def _credit_link(*, user_id: int, balance: Any) -> str:
    url = reverse("admin:billing_adjust", args=[user_id])
    shown = "—" if balance is None else f"${services.money(balance):,.2f}"
    return format_html('{} <a class="button" href="{}">Credit / debit</a>', shown, url)


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class UserWithBalanceAdmin(UserAdmin):
    """Django's user admin with each user's balance and the way to credit or debit it,
    on the list and on the user's page."""

    list_display = ("username", "email", "first_name", "last_name", "is_staff", "balance")
    list_select_related = ("billing_account",)
    readonly_fields = ("balance",)
    fieldsets = (
        *(UserAdmin.fieldsets or ())[:1],
        ("Billing", {"fields": ("balance",)}),
        *(UserAdmin.fieldsets or ())[1:],
    )

    @admin.display(description="Balance (USD)", ordering="billing_account__balance_usd")
    def balance(self, obj: Any) -> str:
        if obj.pk is None:
            return "—"
        account = getattr(obj, "billing_account", None)
        return _credit_link(user_id=obj.pk, balance=account.balance_usd if account else None)


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    """The operator's per-user overrides of GPUCLOUD_LIMIT_* (blank: the setting) and,
    for support, the customer's own spend caps."""

    list_display = ("user", "max_instances", "max_gpus", "max_spend_per_hour_usd", "daily_cap_usd", "monthly_cap_usd")
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("updated_at",)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "user", "kind", "amount", "idempotency_key", "operator", "reason")
    list_filter = ("kind",)
    search_fields = ("user__username", "idempotency_key", "stripe_id", "reason")
    list_select_related = ("user", "operator")
    date_hierarchy = "at"

    actions = ("refund_topups",)

    @admin.display(description="Amount (USD)", ordering="amount_usd")
    def amount(self, obj: LedgerEntry) -> str:
        return f"{obj.amount_usd:+.6f}"

    def get_actions(self, request: HttpRequest) -> dict:
        # Money leaves only by a superuser's hand; the action posts entries, never edits one.
        actions = super().get_actions(request)
        if not request.user.is_superuser:
            actions.pop("refund_topups", None)
        return actions

    @admin.action(description="Refund the selected top-ups in full at Stripe")
    def refund_topups(self, request: HttpRequest, queryset) -> None:
        for entry in queryset.filter(kind=LedgerEntry.Kind.TOPUP):
            try:
                debit = services.topup_refund(entry=entry, operator=request.user)
            except BillingError as exc:
                self.message_user(request, f"{entry.stripe_id}: {exc.message}", messages.ERROR)
            else:
                if debit is None:
                    self.message_user(request, f"{entry.stripe_id}: refund already recorded.", messages.WARNING)
                else:
                    amount = services.money(-debit.amount_usd)
                    self.message_user(request, f"{entry.stripe_id}: {amount} USD refunded.", messages.SUCCESS)


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "user",
        "kind",
        "gpu_type",
        "instance",
        "ended_at",
        "duration_seconds",
        "cost_usd",
        "billed_usd",
    )
    list_filter = ("kind", "gpu_type", ("ended_at", admin.EmptyFieldListFilter))
    search_fields = ("user__username", "instance__public_id")
    list_select_related = ("user", "gpu_type", "instance")
    date_hierarchy = "started_at"
    actions = ("export_csv",)

    def get_urls(self) -> list:
        economics = path("economics/", self.admin_site.admin_view(economics_view), name="billing_economics")
        return [economics, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", None) or {}
        if "cl" in changelist:
            changelist["usage_summary"] = selectors.usage_summary(queryset=changelist["cl"].queryset)
        return response

    @admin.action(description="Export the selected usage as CSV")
    def export_csv(self, request: HttpRequest, queryset) -> HttpResponse:
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="usage.csv"'
        writer = csv.writer(response)
        writer.writerow(
            [
                "id",
                "user",
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
                "billed_usd",
            ]
        )
        for r in queryset.select_related("user", "instance", "gpu_type").order_by("started_at", "id"):
            writer.writerow(
                [
                    r.pk,
                    r.user.get_username(),
                    r.kind,
                    r.instance.public_id,
                    r.gpu_type.sku if r.gpu_type else "",
                    r.gpu_name,
                    r.storage_gb or "",
                    r.started_at.isoformat(),
                    r.ended_at.isoformat() if r.ended_at else "",
                    r.duration_seconds if r.duration_seconds is not None else "",
                    f"{r.rate_per_hour:.6f}",
                    r.cost_usd if r.cost_usd is not None else "",
                    f"{services.money(r.billed_usd)}",
                ]
            )
        return response


from billing import admin_faults  # noqa: E402, F401  (GPU-fault credits, issue 20)
