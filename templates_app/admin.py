"""The catalog in the admin: the same check as the API (templates_app.validation).

Whoever holds `change_template` writes what reaches Docker as is, so the admin's form
refuses what the API refuses; the two doors cannot disagree.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from templates_app.models import Template
from templates_app.validation import TEMPLATE_FIELDS, template_problems


class TemplateForm(forms.ModelForm):
    """Every field the form holds passes the catalog's one validator."""

    class Meta:
        model = Template
        fields = TEMPLATE_FIELDS

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # The changelist's form (list_editable) holds only some fields: only those present
        # are checked, and an error is attached only to a field this form has.
        for field, problems in template_problems(values=cleaned).items():
            for problem in problems:
                self.add_error(field if field in self.fields else None, problem)
        return cleaned


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    list_display = ("slug", "name", "category", "image", "access_list", "min_gpu_memory_mb", "enabled", "sort_order")
    list_filter = ("category", "enabled")
    search_fields = ("slug", "name", "image", "description")
    list_editable = ("enabled", "sort_order")
    prepopulated_fields = {"slug": ("name",)}

    @admin.display(description="Access")
    def access_list(self, obj: Template) -> str:
        return ", ".join(obj.access_methods)
