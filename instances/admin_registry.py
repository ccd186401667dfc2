"""Operators' admin of registry credentials: the password is written, never shown."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from instances.access.crypto import encrypt
from instances.registry_models import RegistryCredential


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
