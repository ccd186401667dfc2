from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from instances.access.tokens import token_revoke
from instances.admin_fleet import cordon_gpus, drain_hosts, last_beat, runs_here, uncordon_gpus, undrain_hosts
from instances.admin_lifecycle import InstanceLifecycleAdmin
from instances.admin_registry import warm_images
from instances.models import ApiToken, Gpu, GpuType, Host, Instance, InstanceEvent, PortBinding, SSHKey
from instances.storage_models import workspace_usage_text

HOST_NETWORK_PERMISSION = "instances.change_host_network"


def _active_instances() -> QuerySet[Instance]:
    return Instance.objects.filter(gpu=OuterRef("pk"), status__in=Instance.GPU_HOLDING)


class GpuInline(admin.TabularInline):
    model = Gpu
    extra = 0
    fields = ("index", "name", "gpu_type", "uuid", "memory_mb", "simulated", "enabled")
    readonly_fields = ("uuid", "simulated")
    show_change_link = True


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "status",
        "preflight",
        "public_address",
        "bind_address",
        "port_range",
        "gpu_count",
        "heartbeat",
    )
    list_filter = ("status",)
    search_fields = ("name", "public_address")
    readonly_fields = ("preflight_status", "heartbeat", "status_reason", "instances_here", "facts", "created_at")
    inlines = [GpuInline]
    actions = [warm_images, drain_hosts, undrain_hosts]
    heartbeat = staticmethod(admin.display(description="Last beat (why not online)")(last_beat))
    instances_here = staticmethod(admin.display(description="Runs here")(runs_here))

    def get_readonly_fields(self, request: HttpRequest, obj: Host | None = None) -> tuple[str, ...]:
        """Where customers' SSH commands and Jupyter links point, and which engine the
        host is driven through, only for holders of `instances.change_host_network`:
        whoever sets them can send customers' logins and tokens elsewhere."""
        fields = tuple(super().get_readonly_fields(request, obj))
        if request.user.has_perm(HOST_NETWORK_PERMISSION):
            return fields
        return (*fields, *Host.NETWORK_FIELDS)

    def save_model(self, request: HttpRequest, obj: Host, form: forms.ModelForm, change: bool) -> None:
        """Save, then write each network change, old and new value, to the admin's log
        (Django's LogEntry, beside the entry naming the changed fields)."""
        changes = [
            f"{field}: {form.initial.get(field)!r} → {form.cleaned_data[field]!r}"
            for field in Host.NETWORK_FIELDS
            if change and field in form.changed_data
        ]
        super().save_model(request, obj, form, change)
        if changes:
            self.log_change(request, obj, "Network changed: " + "; ".join(changes))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Host]:
        return super().get_queryset(request).annotate(gpu_total=Count("gpus"))

    @admin.display(description="GPUs", ordering="gpu_total")
    def gpu_count(self, obj: Host) -> int:
        return obj.gpu_total  # type: ignore[attr-defined]

    @admin.display(description="Port range")
    def port_range(self, obj: Host) -> str:
        return f"{obj.port_range_start}-{obj.port_range_end}"

    @admin.display(description="Preflight")
    def preflight(self, obj: Host) -> str:
        """Passed / overridden / REFUSED (instances.host.preflight); "not checked" before the first run."""
        found = (obj.facts or {}).get("preflight")
        if not found:
            return "not checked"
        if found.get("blocked"):
            return "REFUSED"
        if found.get("overridden"):
            return "overridden"
        return "passed" if found.get("ok") else "flagged"

    @admin.display(description="Preflight (runc, NVIDIA Container Toolkit)")
    def preflight_status(self, obj: Host) -> str:
        found = (obj.facts or {}).get("preflight")
        if not found:
            return mark_safe(  # a constant: nothing in it comes from input
                "<strong>Not checked yet.</strong> A host with real GPUs takes no instances until its worker "
                "has checked runc and the NVIDIA Container Toolkit (<code>manage.py sync_host</code> or a "
                "worker start)."
            )
        colour = "#ba2121" if found.get("blocked") else ("#2b7a0b" if found.get("ok") else "#b26b00")
        checks = format_html_join("", "<li>{}</li>", ((c.get("message", ""),) for c in found.get("checks", [])))
        return format_html(
            '<strong style="color:{}">{}</strong><ul>{}</ul><small>Checked at {}</small>',
            colour,
            found.get("message", ""),
            checks,
            found.get("checked_at", ""),
        )


@admin.register(GpuType)
class GpuTypeAdmin(admin.ModelAdmin):
    list_display = (
        "sku",
        "display_name",
        "rate_per_hour",
        "memory_mb",
        "cpu_limit",
        "ram_limit_mb",
        "enabled",
        "gpu_total",
    )
    list_filter = ("enabled",)
    search_fields = ("sku", "display_name")

    def get_queryset(self, request: HttpRequest) -> QuerySet[GpuType]:
        return super().get_queryset(request).annotate(gpus_total=Count("gpus"))

    @admin.display(description="GPUs", ordering="gpus_total")
    def gpu_total(self, obj: GpuType) -> int:
        return obj.gpus_total  # type: ignore[attr-defined]


class BusyFilter(admin.SimpleListFilter):
    title = "occupancy"
    parameter_name = "busy"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Busy"), ("no", "Free")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Gpu]) -> QuerySet[Gpu]:
        if self.value() == "yes":
            return queryset.filter(holder_id__isnull=False)  # type: ignore[misc]  # annotated by GpuAdmin
        if self.value() == "no":
            return queryset.filter(holder_id__isnull=True)  # type: ignore[misc]  # annotated by GpuAdmin
        return queryset


@admin.register(Gpu)
class GpuAdmin(admin.ModelAdmin):
    """The GPU overview: who holds which GPU, its metrics, and whether it is simulated."""

    list_display = (
        "__str__",
        "host",
        "index",
        "gpu_type",
        "kind",
        "enabled",
        "held_by",
        "utilization",
        "memory",
        "temperature_c",
        "power_w",
    )
    list_filter = (BusyFilter, "simulated", "enabled", "gpu_type", "host")
    actions = [cordon_gpus, uncordon_gpus]
    search_fields = ("uuid", "name", "host__name")
    list_select_related = ("host", "gpu_type")
    readonly_fields = (
        "uuid",
        "simulated",
        "utilization_percent",
        "memory_used_mb",
        "temperature_c",
        "power_w",
        "metrics_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Gpu]:
        active = _active_instances()
        return (
            super()
            .get_queryset(request)
            .annotate(
                holder_id=Subquery(active.values("public_id")[:1]),
                holder_owner=Subquery(active.values("owner__username")[:1]),
                holder_pk=Subquery(active.values("pk")[:1]),
            )
        )

    @admin.display(description="Real/simulated", ordering="simulated")
    def kind(self, obj: Gpu) -> str:
        return "simulated" if obj.simulated else "real (NVML)"

    @admin.display(description="Held by", ordering="holder_id")
    def held_by(self, obj: Gpu) -> str:
        if not obj.holder_id:  # type: ignore[attr-defined]
            return "— free —"
        return format_html(
            '<a href="../instance/{}/change/">{}</a> ({})',
            obj.holder_pk,  # type: ignore[attr-defined]
            obj.holder_id,  # type: ignore[attr-defined]
            obj.holder_owner,  # type: ignore[attr-defined]
        )

    @admin.display(description="Util.")
    def utilization(self, obj: Gpu) -> str:
        if obj.simulated:
            return "n/a (simulated)"
        return "—" if obj.utilization_percent is None else f"{obj.utilization_percent}%"

    @admin.display(description="Memory used")
    def memory(self, obj: Gpu) -> str:
        if obj.memory_used_mb is None:
            return f"— / {obj.memory_mb} MiB"
        return f"{obj.memory_used_mb} / {obj.memory_mb} MiB"


class EventInline(admin.TabularInline):
    model = InstanceEvent
    extra = 0
    can_delete = False
    fields = ("at", "kind", "source", "actor", "message")
    readonly_fields = fields
    ordering = ("-at", "-id")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class PortInline(admin.TabularInline):
    model = PortBinding
    extra = 0
    can_delete = False
    fields = ("name", "host", "host_port", "container_port", "protocol")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Instance)
class InstanceAdmin(InstanceLifecycleAdmin):
    """Instances with their ports and timeline; stop / start / restart / destroy come
    from InstanceLifecycleAdmin (instances.admin_lifecycle)."""

    list_display = (
        "public_id",
        "name",
        "owner",
        "status",
        "template",
        "gpu_type",
        "gpu",
        "host",
        "storage_gb",
        "workspace_used",
        "created_at",
        "started_at",
    )
    list_filter = ("status", "gpu_type", "template", "host")
    search_fields = ("public_id", "name", "owner__username", "owner__email", "container_id")
    list_select_related = ("owner", "template", "gpu_type", "gpu__host", "host", "workspace_usage")
    date_hierarchy = "created_at"
    # Credentials stay encrypted and out of the admin; the lifecycle owns these fields.
    exclude = ("password_encrypted", "access_token_encrypted", "env")
    readonly_fields = (
        "public_id",
        "owner",
        "template",
        "gpu_type",
        "gpu",
        "host",
        "status",
        "container_id",
        "storage_gb",
        "workspace_used",
        "access",
        "ssh_public_keys",
        "ssh_password_auth",
        "created_at",
        "updated_at",
        "started_at",
        "stopped_at",
        "terminated_at",
        "workspace_removed_at",
        "last_error",
        "stop_reason",
    )
    inlines = [PortInline, EventInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # instances are launched through the lifecycle, never typed in

    @admin.display(description="Workspace used")
    def workspace_used(self, obj: Instance) -> str:
        return workspace_usage_text(obj)


@admin.register(InstanceEvent)
class InstanceEventAdmin(admin.ModelAdmin):
    list_display = ("at", "instance", "kind", "source", "actor", "message")
    list_filter = ("kind", "source")
    search_fields = ("instance__public_id", "message")
    list_select_related = ("instance", "actor")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # append-only

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(PortBinding)
class PortBindingAdmin(admin.ModelAdmin):
    list_display = ("host", "host_port", "instance", "name", "container_port", "protocol", "created_at")
    list_filter = ("host", "protocol", "name")
    search_fields = ("instance__public_id", "=host_port")
    list_select_related = ("host", "instance")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(SSHKey)
class SSHKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "key_type", "bits", "fingerprint", "created_at")
    list_filter = ("key_type",)
    search_fields = ("name", "owner__username", "fingerprint")
    list_select_related = ("owner",)
    readonly_fields = ("owner", "name", "public_key", "key_type", "bits", "fingerprint", "created_at")

    # A key is its owner's way into their containers: staff who could add one for a
    # customer, or replace the customer's, could log into the customer's instances. So
    # keys are made only by their owner; deleting one (a leaked key) stays with
    # `delete_sshkey`, since it only takes access away.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "prefix", "created_at", "last_used_at", "expires_at", "revoked")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "owner__username", "prefix")
    list_select_related = ("owner",)
    exclude = ("key_hash",)
    # A revocation is final and an expiry is the owner's: staff revoke with the action
    # below, and can neither bring a revoked token back nor lengthen a token's life.
    readonly_fields = ("owner", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are made by their owner or `manage.py create_api_token`

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            token_revoke(user=token.owner, token_id=token.pk)
            revoked += 1
        self.message_user(request, f"{revoked} token(s) revoked; they stop working at once.")

    @admin.display(boolean=True, description="Revoked", ordering="revoked_at")
    def revoked(self, obj: ApiToken) -> bool:
        return obj.revoked_at is not None


# Admin pages of their own modules: GPU health; idle rules, runtime rules, webhook deliveries;
# the waitlist.
from instances import admin_health, admin_idle, admin_snapshots, admin_waitlist  # noqa: E402, F401
