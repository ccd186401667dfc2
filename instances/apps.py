from django.apps import AppConfig


class InstancesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "instances"

    def ready(self) -> None:
        # Models can be imported only once the app registry is ready: this is the one
        # place receivers can be connected (Django's documented pattern).
        from instances import signals  # noqa: F401  (the API cache's version bumps)
        from instances.access import passwords  # noqa: F401  (a new password revokes the tokens)
