"""Operator economics in the admin (admin → Usage records → Economics): per GPU and per
host for a month, a chart (Chart.js, served from our own static files) and CSV."""

from __future__ import annotations

import csv

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from billing.economics import gpu_economics, operator_costs, recent_months
from billing.economics_models import OperatorCosts

CSV_FIELDS = (
    "host", "gpu", "uuid", "simulated", "busy_hours", "utilization_percent",
    "revenue_usd", "energy_kwh", "energy_usd", "hardware_usd", "margin_usd",
)  # fmt: skip


def economics_view(request: HttpRequest) -> HttpResponse:
    """The month's economics as a page, or as CSV with `?format=csv`."""
    if not request.user.has_perm("billing.view_usagerecord"):
        return HttpResponse(status=403)
    month = request.GET.get("month") or None
    try:
        report = gpu_economics(month=month)
    except ValueError:
        return HttpResponse("month must be YYYY-MM\n", status=400, content_type="text/plain")
    if request.GET.get("format") == "csv":
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="economics-{report["month"]}.csv"'
        writer = csv.writer(response)
        writer.writerow(["month", *CSV_FIELDS])
        for row in report["rows"]:
            writer.writerow([report["month"], *(row[f] for f in CSV_FIELDS)])
        return response
    chart = {
        "labels": [f"{r['host']} {r['gpu']}" for r in report["rows"]],
        "revenue": [float(r["revenue_usd"]) for r in report["rows"]],
        "energy": [float(r["energy_usd"]) for r in report["rows"]],
        "hardware": [float(r["hardware_usd"]) for r in report["rows"]],
        "margin": [float(r["margin_usd"]) for r in report["rows"]],
    }
    context = {
        **admin.site.each_context(request),
        "title": f"Economics {report['month']}",
        "report": report,
        "months": recent_months(),
        "chart": chart,
        "prices": operator_costs(),
    }
    return TemplateResponse(request, "admin/billing/economics.html", context)


@admin.register(OperatorCosts)
class OperatorCostsAdmin(admin.ModelAdmin):
    """A new row changes the prices from now on (the newest is in force); rows are kept."""

    list_display = ("created_at", "electricity_usd_per_kwh", "hardware_usd_per_gpu_month")

    def has_change_permission(self, request: HttpRequest, obj: OperatorCosts | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OperatorCosts | None = None) -> bool:
        return False
