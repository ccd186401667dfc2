"""The workspace's side of the instances API: used / size, and growing a stopped one."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gpucloud.errors import error_responses
from instances import selectors
from instances.models import Instance, WorkspaceUsage
from instances.services.storage import instance_resize


class WorkspaceUsageSerializer(serializers.Serializer):
    used_bytes = serializers.IntegerField()
    size_bytes = serializers.IntegerField()
    percent = serializers.FloatField()
    measured_at = serializers.DateTimeField()


@extend_schema_field(WorkspaceUsageSerializer(allow_null=True))
class WorkspaceUsageField(serializers.Field):
    """Used / size of /workspace as last measured on its host (while it runs, and when it
    stopped); null before the first measure or on a host without quotas."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, instance: Instance) -> dict[str, Any] | None:
        try:
            usage = instance.workspace_usage
        except WorkspaceUsage.DoesNotExist:
            return None
        return {
            "used_bytes": usage.used_bytes,
            "size_bytes": usage.size_bytes,
            "percent": usage.percent,
            "measured_at": serializers.DateTimeField().to_representation(usage.measured_at),
        }


class ResizeInput(serializers.Serializer):
    storage = serializers.IntegerField(help_text="The new size of /workspace in GB: larger than the current one.")


class InstanceResizeApi(APIView):
    @extend_schema(
        summary="Grow a stopped instance's storage",
        description="Only a stopped instance, and only larger (a workspace never shrinks). Billing follows "
        "the new size from now; the filesystem is grown on the host before the next start.",
        tags=["instances"],
        request=ResizeInput,
        responses={200: None, **error_responses(400, 404, 409)},
        operation_id="instances_resize",
    )
    def post(self, request: Request, id: str) -> Response:
        # The full InstanceOutput lives in instances.api.instances, which imports this module
        # for its field: the answer is the facts that changed, the instance is one GET away.
        instance = selectors.instance_get(user=request.user, public_id=id)
        body = ResizeInput(data=request.data)
        body.is_valid(raise_exception=True)
        resized = instance_resize(instance=instance, storage_gb=body.validated_data["storage"], actor=request.user)
        return Response({"id": resized.public_id, "status": resized.status, "storage": resized.storage_gb},
                        status=status.HTTP_200_OK)  # fmt: skip
