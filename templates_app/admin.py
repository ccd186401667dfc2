from __future__ import annotations

from django.contrib import admin

from templates_app.models import Template


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "category", "image", "access_list", "min_gpu_memory_mb", "enabled", "sort_order")
    list_filter = ("category", "enabled")
    search_fields = ("slug", "name", "image", "description")
    list_editable = ("enabled", "sort_order")
    prepopulated_fields = {"slug": ("name",)}

    @admin.display(description="Access")
    def access_list(self, obj: Template) -> str:
        return ", ".join(obj.access_methods)
