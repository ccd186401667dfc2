"""The notifications page: webhook endpoints, their delivery log (replay), and which
events go to email and to webhooks."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from instances.notify import services
from instances.notify.errors import InvalidWebhook, NotFound, TooManyWebhooks
from instances.notify.models import Channel, Event

DELIVERIES_SHOWN = 50


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    new_secret = None
    if request.method == "POST" and request.POST.get("form") == "webhook":
        try:
            endpoint, new_secret = services.endpoint_create(
                user=request.user,
                url=request.POST.get("url", "").strip(),
                description=request.POST.get("description", "").strip()[:100],
            )
        except (InvalidWebhook, TooManyWebhooks) as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Webhook {endpoint.url} added. Copy its signing secret now: it is shown once.")
    elif request.method == "POST" and request.POST.get("form") == "preferences":
        wanted = {e: {c: f"{e}:{c}" in request.POST for c in Channel.values} for e in Event.values}
        services.preferences_set(user=request.user, wanted=wanted)
        messages.success(request, "Notification preferences saved.")
        return redirect("web:notifications")
    prefs = services.preferences(user=request.user)
    context = {
        "endpoints": services.endpoints_of(user=request.user),
        "deliveries": services.deliveries_of(user=request.user)[:DELIVERIES_SHOWN],
        "new_secret": new_secret,
        "rows": [(e, label, prefs[e]) for e, label in Event.choices],
        "channels": Channel.choices,
    }
    return render(request, "instances/notifications.html", context)


@login_required
@require_POST
def webhook_delete(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    try:
        services.endpoint_delete(user=request.user, endpoint_id=endpoint_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    messages.success(request, "Webhook removed.")
    return redirect("web:notifications")


@login_required
@require_POST
def delivery_replay(request: HttpRequest, delivery_id: int) -> HttpResponse:
    try:
        delivery = services.delivery_get(user=request.user, delivery_id=delivery_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    services.delivery_replay(delivery=delivery)
    messages.success(request, f"Sending {delivery.event_id} again.")
    return redirect("web:notifications")
