"""Snapshots of my workspaces: take (of a stopped instance), list, read, delete, restore
into a stopped instance; "destroy and keep a snapshot" (`DELETE /instances/ID?snapshot=1`).

Lookups are scoped to the caller: another user's snapshot or instance is a 404. A
snapshot is usable (restorable, billed) once `ready`; `done_bytes` / `total_bytes` show
an upload's progress, and a restore's on its own resource.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gpucloud.errors import error_responses
from instances import selectors, services
from instances.models import Instance, Snapshot, SnapshotRestore
from instances.services.snapshots import snapshot_create, snapshot_delete, snapshot_get, snapshot_list, snapshot_restore
from instances.services.transitions import instance_destroy_keeping_snapshot

DESTROY_SNAPSHOT_PARAM = OpenApiParameter(
    "snapshot",
    OpenApiTypes.BOOL,
    description="true: snapshot the workspace before it goes (the snapshot is listed under /snapshots).",
)


class SnapshotOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    instance = serializers.CharField(source="instance.public_id")
    error = serializers.CharField(source="last_error", allow_blank=True)

    class Meta:
        model = Snapshot
        fields = (
            "id",
            "name",
            "instance",
            "status",
            "size_bytes",
            "content_bytes",
            "sha256",
            "done_bytes",
            "total_bytes",
            "attempts",
            "error",
            "created_at",
            "ready_at",
        )
        read_only_fields = fields
        extra_kwargs = {
            "size_bytes": {"help_text": "Bytes stored (zstd-compressed): what is billed per GB-month."},
            "content_bytes": {"help_text": "Bytes of the archive's files: the storage a restore needs."},
        }


class RestoreOutput(serializers.ModelSerializer):
    snapshot = serializers.CharField(source="snapshot.public_id")
    instance = serializers.CharField(source="instance.public_id")
    error = serializers.CharField(source="last_error", allow_blank=True)

    class Meta:
        model = SnapshotRestore
        fields = ("snapshot", "instance", "status", "done_bytes", "total_bytes", "error", "created_at", "finished_at")
        read_only_fields = fields


class SnapshotInput(serializers.Serializer):
    name = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")


class RestoreInput(serializers.Serializer):
    snapshot = serializers.CharField(max_length=32, help_text="The id of one of my ready snapshots.")


class DestroyQuery(serializers.Serializer):
    snapshot = serializers.BooleanField(required=False, default=False)


def instance_destroy_asked(*, request: Request, instance: Instance) -> Instance:
    """The instances API's DELETE: a plain destroy, or with `?snapshot=1` one that keeps a snapshot."""
    query = DestroyQuery(data=request.query_params)
    query.is_valid(raise_exception=True)
    if query.validated_data["snapshot"]:
        return instance_destroy_keeping_snapshot(instance=instance, actor=request.user)[0]
    return services.instance_destroy(instance=instance, actor=request.user, source="user")


class SnapshotListApi(generics.ListAPIView):
    serializer_class = SnapshotOutput

    def get_queryset(self) -> Any:
        return snapshot_list(user=self.request.user)

    @extend_schema(
        summary="My snapshots", tags=["snapshots"], responses={200: SnapshotOutput(many=True), **error_responses(400)}
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class SnapshotDetailApi(APIView):
    @extend_schema(
        summary="One of my snapshots", tags=["snapshots"], responses={200: SnapshotOutput, **error_responses(404)}
    )
    def get(self, request: Request, id: str) -> Response:
        return Response(SnapshotOutput(snapshot_get(user=request.user, public_id=id)).data)

    @extend_schema(
        summary="Delete a snapshot",
        description="Billing stops now; the stored object is removed shortly after.",
        tags=["snapshots"],
        responses={204: None, **error_responses(404)},
    )
    def delete(self, request: Request, id: str) -> Response:
        snapshot_delete(snapshot=snapshot_get(user=request.user, public_id=id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InstanceSnapshotApi(APIView):
    @extend_schema(
        summary="Snapshot a stopped instance's workspace",
        description="Asynchronous: 202 with the snapshot (`pending`), `ready` once stored. A running "
        "instance is refused (409 `instances:snapshot-needs-stop`): stop it first, or destroy it with "
        "`?snapshot=1`.",
        tags=["snapshots"],
        request=SnapshotInput,
        responses={202: SnapshotOutput, **error_responses(400, 404, 409)},
        operation_id="instances_snapshot",
    )
    def post(self, request: Request, id: str) -> Response:
        body = SnapshotInput(data=request.data)
        body.is_valid(raise_exception=True)
        instance = selectors.instance_get(user=request.user, public_id=id)
        snapshot = snapshot_create(instance=instance, name=body.validated_data["name"], actor=request.user)
        return Response(SnapshotOutput(snapshot).data, status=status.HTTP_202_ACCEPTED)


class InstanceRestoreApi(APIView):
    @extend_schema(
        summary="The latest restore into this instance",
        tags=["snapshots"],
        responses={200: RestoreOutput, **error_responses(404)},
        operation_id="instances_restore_read",
    )
    def get(self, request: Request, id: str) -> Response:
        instance = selectors.instance_get(user=request.user, public_id=id)
        restore = instance.restores.select_related("snapshot").first()
        if restore is None:
            return Response(None)
        return Response(RestoreOutput(restore).data)

    @extend_schema(
        summary="Restore a snapshot into a stopped instance",
        description="Asynchronous: the workspace is replaced only once the snapshot's files are complete "
        "and their checksum matches; otherwise it is left as it was.",
        tags=["snapshots"],
        request=RestoreInput,
        responses={202: RestoreOutput, **error_responses(400, 404, 409)},
        operation_id="instances_restore",
    )
    def post(self, request: Request, id: str) -> Response:
        body = RestoreInput(data=request.data)
        body.is_valid(raise_exception=True)
        instance = selectors.instance_get(user=request.user, public_id=id)
        snapshot = snapshot_get(user=request.user, public_id=body.validated_data["snapshot"])
        restore = snapshot_restore(snapshot=snapshot, instance=instance, actor=request.user)
        return Response(RestoreOutput(restore).data, status=status.HTTP_202_ACCEPTED)
