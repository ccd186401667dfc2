from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "billing"

    def ready(self) -> None:
        # Models can be imported only once the app registry is ready: this is the one
        # place receivers can be connected (Django's documented pattern).
        from billing import signals  # noqa: F401
