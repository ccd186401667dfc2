from __future__ import annotations

from django.urls import path

from billing import api

app_name = "billing"

urlpatterns = [
    path("balance", api.BalanceView.as_view(), name="balance"),
    path("usage", api.UsageListView.as_view(), name="usage"),
    path("ledger", api.LedgerListView.as_view(), name="ledger"),
    path("topups", api.TopupCreateView.as_view(), name="topups"),
    path("limits", api.LimitsView.as_view(), name="limits"),
]
