"""What changes what the API shows: model signals that bump the API cache's versions.

Queryset updates send no signals; the few that change what the API shows call
instances.api.cache themselves (worker provisioning, billing's rate change).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from instances.api import cache as apicache
from instances.models import ApiToken, GpuType, Host, Instance, PortBinding
from templates_app.models import Template


@receiver([post_save, post_delete], sender=Instance, dispatch_uid="apicache-instance")
def _instance_changed(sender: Any, instance: Instance, **kwargs: Any) -> None:
    apicache.user_changed(instance.owner_id)


@receiver([post_save, post_delete], sender=PortBinding, dispatch_uid="apicache-port")
def _port_changed(sender: Any, instance: PortBinding, **kwargs: Any) -> None:
    if apicache.enabled():
        owner_id = Instance.objects.filter(pk=instance.instance_id).values_list("owner_id", flat=True).first()
        apicache.user_changed(owner_id)


@receiver([post_save, post_delete], sender=ApiToken, dispatch_uid="apicache-token")
def _token_changed(sender: Any, instance: ApiToken, **kwargs: Any) -> None:
    apicache.user_changed(instance.owner_id)


@receiver([post_save, post_delete], sender=settings.AUTH_USER_MODEL, dispatch_uid="apicache-user")
def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    apicache.user_changed(instance.pk)


@receiver([post_save, post_delete], sender=GpuType, dispatch_uid="apicache-gputype")
@receiver([post_save, post_delete], sender=Host, dispatch_uid="apicache-host")
@receiver([post_save, post_delete], sender=Template, dispatch_uid="apicache-template")
def _catalog_changed(sender: Any, **kwargs: Any) -> None:
    apicache.catalog_changed()
