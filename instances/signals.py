"""What changes what the API shows: model signals that bump the API cache's versions
(instances.cache). Nothing else calls the cache.

Queryset updates send no signals. The worker moves an instance's status with update()
(a conditional claim), but every status change writes an InstanceEvent in the same
transaction: the event's post_save names the instance's owner and covers them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from instances import cache as apicache
from instances.models import ApiToken, GpuType, Host, Instance, InstanceEvent, PortBinding, WorkspaceUsage
from templates_app.models import Template


@receiver([post_save, post_delete], sender=Instance, dispatch_uid="apicache-instance")
def _instance_changed(sender: Any, instance: Instance, **kwargs: Any) -> None:
    apicache.user_changed(instance.owner_id)


def _owner_changed(instance_id: int) -> None:
    # Only the instance's id is at hand: one small read, skipped when nothing is cached.
    if apicache.enabled():
        apicache.user_changed(Instance.objects.filter(pk=instance_id).values_list("owner_id", flat=True).first())


@receiver([post_save, post_delete], sender=WorkspaceUsage, dispatch_uid="apicache-workspace-usage")
def _usage_changed(sender: Any, instance: WorkspaceUsage, **kwargs: Any) -> None:
    _owner_changed(instance.instance_id)


@receiver([post_save, post_delete], sender=PortBinding, dispatch_uid="apicache-port")
def _port_changed(sender: Any, instance: PortBinding, **kwargs: Any) -> None:
    _owner_changed(instance.instance_id)


@receiver(post_save, sender=InstanceEvent, dispatch_uid="apicache-event")
def _event_added(sender: Any, instance: InstanceEvent, **kwargs: Any) -> None:
    if InstanceEvent.instance.is_cached(instance):  # as event_add writes it: no read needed
        apicache.user_changed(instance.instance.owner_id)
    else:
        _owner_changed(instance.instance_id)


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
