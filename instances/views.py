"""Customer web pages: dashboard, launch, instance, SSH keys, API tokens.

Views validate, call one service or selector, and render. Domain errors are shown in
words (their `message`), never swallowed. Live parts are HTMX partials.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.module_loading import import_string
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from gpucloud.errors import DomainError
from instances import selectors, services
from instances.access import sshkeys
from instances.access import tokens as api_tokens
from instances.access.addresses import access_for
from instances.access.authentication import instance_create_throttle_check
from instances.errors import InstanceError, NotFound, WaitlistEntryNotFound
from instances.models import Instance, InstanceEvent, WaitlistEntry
from instances.services import idle_rules, waitlist
from instances.services.move import move_active, move_plan
from templates_app.models import Template

ACCESS_LABELS = dict(Template.AccessMethod.choices)


class HtmxHttpRequest(HttpRequest):
    """A request through django-htmx's middleware (settings.MIDDLEWARE), for type checking."""

    htmx: HtmxDetails


def _costs(instances: list[Instance]) -> dict[int, Decimal]:
    path = getattr(settings, "GPUCLOUD_INSTANCE_COSTS", "")
    if not path or not instances:
        return {}
    return import_string(path)(instance_ids=[i.pk for i in instances])


def _get(request: HttpRequest, public_id: str) -> Instance:
    try:
        return selectors.instance_get(user=request.user, public_id=public_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc


def _dashboard_rows(request: HttpRequest) -> list[dict[str, Any]]:
    instances = list(selectors.instance_list(user=request.user).exclude(status=Instance.Status.TERMINATED)[:100])
    costs = _costs(instances)
    return [{"instance": i, "cost": costs.get(i.pk, Decimal(0))} for i in instances]


@login_required
@require_GET
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    context = {"rows": _dashboard_rows(request), "waiting": _waiting(request)}
    if request.htmx:
        return render(request, "instances/_instance_rows.html", context)
    return render(request, "instances/dashboard.html", context)


def _gpu_choices(templates: list[Template], chosen_slug: str) -> list[dict[str, Any]]:
    """Availability per GPU type with its memory, marked where the chosen template (or
    the first) needs more; the launch service refuses those (GpuTooSmall)."""
    chosen = next((t for t in templates if t.slug == chosen_slug), templates[0] if templates else None)
    needed = chosen.min_gpu_memory_mb if chosen else 0
    memory = selectors.gpu_type_memory_mb()
    rows = []
    for row in selectors.availability():
        has = memory.get(row["sku"], 0)
        rows.append(row | {"memory_mb": has, "too_small": bool(has and has < needed), "chosen": chosen})
    return rows


def _launch_context(request: HttpRequest, form: dict[str, Any]) -> dict[str, Any]:
    templates = list(Template.objects.filter(enabled=True))
    return {
        "gpu_types": _gpu_choices(templates, form.get("template", "")),
        "templates": templates,
        "ssh_keys": sshkeys.sshkey_list(user=request.user),
        "access_choices": Template.AccessMethod.choices,
        "storage_min": settings.GPUCLOUD_STORAGE_GB_MIN,
        "storage_max": settings.GPUCLOUD_STORAGE_GB_MAX,
        "storage_rate": settings.GPUCLOUD_STORAGE_RATE_PER_GB_MONTH,
        "form": form,
    }


@login_required
def launch(request: HttpRequest) -> HttpResponse:
    form: dict[str, Any] = {
        "storage": 50,
        "access": ["ssh"],
        "ssh_password_auth": True,
        "template": request.GET.get("template", ""),
    }
    if request.method == "POST":
        post = request.POST
        form = {
            "name": post.get("name", "").strip(),
            "template": post.get("template", ""),
            "gpu": post.get("gpu", ""),
            "storage": post.get("storage", ""),
            "access": post.getlist("access"),
            "ssh_keys": post.getlist("ssh_keys"),
            "ssh_password_auth": post.get("ssh_password_auth") == "on",
            "queue": post.get("queue") == "on",
        }
        try:
            storage = int(form["storage"])
        except (TypeError, ValueError):
            storage = -1
        try:
            instance_create_throttle_check(request=request)
            instance = services.launch_or_queue(
                queue=form["queue"],
                user=request.user,
                template=form["template"],
                gpu_type=form["gpu"],
                storage_gb=storage,
                access=form["access"],
                name=form["name"],
                ssh_public_keys=sshkeys.sshkeys_resolve(user=request.user, refs=form["ssh_keys"]),
                ssh_password_auth=form["ssh_password_auth"],
                actor=request.user,
            )
        except DomainError as exc:  # ours (429 when throttled), or billing's from the admission checks
            context = _launch_context(request, form) | {"error": exc}
            return render(request, "instances/launch.html", context, status=exc.status)
        if isinstance(instance, WaitlistEntry):
            position = waitlist.waitlist_position(entry=instance)
            messages.success(
                request,
                f"No {instance.gpu_type.display_name} is free: you are number {position} in line ({instance.public_id}). "
                "It starts when one frees up; nothing is billed until then.",
            )
            return redirect("web:dashboard")
        messages.success(request, f"{instance.public_id} is launching on {instance.gpu_type.with_article}.")
        return redirect("web:instance", public_id=instance.public_id)
    return render(request, "instances/launch.html", _launch_context(request, form))


@login_required
@require_GET
def instance_detail(request: HtmxHttpRequest, public_id: str) -> HttpResponse:
    instance = _get(request, public_id)
    events = list(selectors.instance_events(instance=instance).select_related("actor").order_by("-at", "-id")[:50])
    context = {
        "instance": instance,
        "access": access_for(instance=instance, reveal_secrets=False),
        "events": events,
        "gpu_fault": _gpu_fault_since_start(events),
        "cost": _costs([instance]).get(instance.pk, Decimal(0)),
        "access_labels": ACCESS_LABELS,
        "idle": idle_rules.idle_state(instance=instance),
        # A stopped instance whose host cannot take it: the page offers to move it.
        "move": move_plan(instance=instance) if instance.status == "stopped" else None,
        "moving": instance.status == "stopped" and move_active(instance=instance),
    }
    if request.htmx and request.GET.get("part") == "live":
        return render(request, "instances/_instance_live.html", context)
    return render(request, "instances/instance.html", context)


def _gpu_fault_since_start(events: list[InstanceEvent]) -> InstanceEvent | None:
    """The newest GPU-fault note since the instance's last start (events newest first)."""
    for event in events:
        if event.kind == InstanceEvent.Kind.STARTED:
            return None
        if event.kind == InstanceEvent.Kind.GPU_FAULT:
            return event
    return None


@login_required
@require_GET
def instance_logs(request: HttpRequest, public_id: str) -> HttpResponse:
    instance = _get(request, public_id)
    try:
        logs = services.instance_logs(instance=instance, lines=100)
    except InstanceError as exc:
        logs = f"(logs unavailable: {exc.message})"
    return render(request, "instances/_logs.html", {"logs": logs, "instance": instance})


@login_required
@require_POST
def instance_credentials(request: HttpRequest, public_id: str) -> HttpResponse:
    """Reveal the owner's credentials on demand (a POST, so never cached or prefetched)."""
    instance = _get(request, public_id)
    return render(
        request,
        "instances/_credentials.html",
        {"instance": instance, "access": access_for(instance=instance, reveal_secrets=True)},
    )


_ACTIONS: dict[str, tuple[Any, str]] = {
    "stop": (services.instance_stop, "Stopping {id}: the GPU is released, /workspace is kept."),
    "start": (
        services.instance_start,
        "Starting {id}: a free GPU of the same type is assigned (it may be another one).",
    ),
    "restart": (services.instance_restart, "Restarting {id}: it keeps its GPU and ports."),
    "destroy": (services.instance_destroy, "Destroying {id}."),
}


@login_required
@require_POST
def instance_action(request: HttpRequest, public_id: str, action: str) -> HttpResponse:
    if action not in _ACTIONS:
        raise Http404("No such action.")
    instance = _get(request, public_id)
    service, done = _ACTIONS[action]
    try:
        if action == "start" and request.POST.get("move") == "1":
            services.instance_start(instance=instance, actor=request.user, source="user", move=True)
            done = "Moving {id} to another host: it starts there once its workspace is moved."
        else:
            service(instance=instance, actor=request.user, source="user")
        messages.success(request, done.format(id=instance.public_id))
    except DomainError as exc:  # ours, or billing's 402 when a start is refused
        messages.error(request, exc.message)
    target = request.POST.get("next", "")
    if target == "dashboard" or action == "destroy":
        return redirect("web:dashboard")
    return redirect("web:instance", public_id=instance.public_id)


@login_required
@require_POST
def instance_resize(request: HttpRequest, public_id: str) -> HttpResponse:
    """Grow a stopped instance's storage (instances.services.storage)."""
    instance = _get(request, public_id)
    try:
        storage_gb = int(request.POST.get("storage", ""))
    except ValueError:
        messages.error(request, "Storage must be a whole number of GB.")
        return redirect("web:instance", public_id=instance.public_id)
    try:
        resized = services.instance_resize(instance=instance, storage_gb=storage_gb, actor=request.user)
        messages.success(request, f"{resized.public_id} now has {resized.storage_gb} GB, billed from now.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("web:instance", public_id=instance.public_id)


@login_required
def ssh_keys(request: HttpRequest) -> HttpResponse:
    error = None
    form = {"name": "", "public_key": ""}
    if request.method == "POST":
        form = {"name": request.POST.get("name", "").strip(), "public_key": request.POST.get("public_key", "")}
        try:
            key = sshkeys.sshkey_create(user=request.user, public_key=form["public_key"], name=form["name"])
            messages.success(request, f"Added {key.name} ({key.fingerprint}).")
            return redirect("web:ssh-keys")
        except InstanceError as exc:
            error = exc
    context = {"keys": sshkeys.sshkey_list(user=request.user), "error": error, "form": form}
    return render(request, "instances/ssh_keys.html", context, status=error.status if error else 200)


def _waiting(request: HttpRequest) -> list[dict[str, Any]]:
    entries = waitlist.waiting().filter(owner_id=request.user.pk).select_related("gpu_type", "template")
    return [{"entry": e, "position": waitlist.waitlist_position(entry=e)} for e in entries]


@login_required
@require_POST
def waitlist_cancel(request: HttpRequest, public_id: str) -> HttpResponse:
    try:
        entry = waitlist.waitlist_cancel(entry=waitlist.waitlist_get(user=request.user, public_id=public_id))
    except WaitlistEntryNotFound as exc:
        raise Http404(exc.message) from exc
    except InstanceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{entry.public_id} left the waitlist.")
    return redirect("web:dashboard")


@login_required
@require_POST
def ssh_key_delete(request: HttpRequest, key_id: int) -> HttpResponse:
    try:
        sshkeys.sshkey_delete(user=request.user, key_id=key_id)
    except InstanceError as exc:
        raise Http404(exc.message) from exc
    messages.success(request, "SSH key removed. Running instances keep the keys they started with.")
    return redirect("web:ssh-keys")


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    new_key = None
    if request.method == "POST":
        try:
            expires_at = api_tokens.token_expiry_in(days=request.POST.get("expires_days", ""))
            token, new_key = api_tokens.token_create(
                user=request.user, name=request.POST.get("name", "").strip(), expires_at=expires_at
            )
        except InstanceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Token {token.name} created. Copy it now: it is shown only once.")
    context = {
        "tokens": api_tokens.token_list(user=request.user),
        "new_key": new_key,
        "expiry_days": api_tokens.TOKEN_EXPIRY_DAYS,
    }
    return render(request, "instances/tokens.html", context)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        token = api_tokens.token_revoke(user=request.user, token_id=token_id)
    except InstanceError as exc:
        raise Http404(exc.message) from exc
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("web:tokens")
