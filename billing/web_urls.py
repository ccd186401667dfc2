from __future__ import annotations

from django.urls import path

from billing import views

app_name = "billing-web"

urlpatterns = [
    path("", views.billing, name="billing"),
    path("balance/", views.balance_partial, name="balance"),
    path("topup/", views.topup, name="topup"),
    path("limits/", views.limits_set, name="limits"),
    path("topup/<str:payment_intent_id>/pay/", views.topup_pay, name="topup-pay"),
]
