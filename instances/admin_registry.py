"""Operators' admin of registry credentials (the password is written, never shown), of
the catalog images each host holds, and the action that warms them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat

from instances.access.crypto import encrypt
from instances.models import Host
from instances.registry_models import HostImage, RegistryCredential
from instances.services.queue import WARM_IMAGES, host_task_send


class RegistryCredentialForm(forms.ModelForm):
    password = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text="Password or access token; stored encrypted. Leave blank to keep the current one.",
    )

    class Meta:
        model = RegistryCredential
        fields = ("registry", "template", "username")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("registry") and not cleaned.get("template"):
            raise forms.ValidationError("Name a registry, or the template whose image this login is for.")
        if not cleaned.get("password") and not (self.instance.pk and self.instance.password_encrypted):
            self.add_error("password", "A new credential needs its password or token.")
        return cleaned

    def save(self, commit: bool = True) -> RegistryCredential:
        credential = super().save(commit=False)
        if self.cleaned_data.get("password"):
            credential.password_encrypted = encrypt(self.cleaned_data["password"])
        if commit:
            credential.save()
        return credential


@admin.register(RegistryCredential)
class RegistryCredentialAdmin(admin.ModelAdmin):
    form = RegistryCredentialForm
    list_display = ("registry", "template", "username", "updated_at")
    search_fields = ("registry", "username", "template__slug")
    autocomplete_fields = ("template",)


@admin.action(description="Warm: pull the enabled templates' images these hosts lack")
def warm_images(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Host]) -> None:
    hosts = list(queryset.exclude(status=Host.Status.OFFLINE))
    for host in hosts:
        host_task_send(WARM_IMAGES, host=host)
    names = ", ".join(h.name for h in hosts) or "none (offline hosts are skipped)"
    modeladmin.message_user(request, f"Asked to warm: {names}. Admin → Host images shows the result.")


@admin.register(HostImage)
class HostImageAdmin(admin.ModelAdmin):
    """What each host's worker last saw; written by the worker only."""

    list_display = ("image", "host", "present", "size", "last_used_at", "checked_at", "error")
    list_filter = ("host", "present")
    search_fields = ("image",)

    @admin.display(description="Size", ordering="size_bytes")
    def size(self, obj: HostImage) -> str:
        return filesizeformat(obj.size_bytes) if obj.size_bytes else "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: HostImage | None = None) -> bool:
        return False
