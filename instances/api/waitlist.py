"""The waitlist in the API: a launch with `?queue=1` that found no free GPU answers 202
with a waiting entry (Location /api/gpu/waitlist/{id}); the customer lists, reads and
cancels (DELETE) their entries. Another user's entry is a 404."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.fields import empty
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gpucloud.errors import error_responses
from instances.services import waitlist
from instances.waitlist_models import WaitlistEntry

QUEUE_PARAM = OpenApiParameter(
    "queue",
    OpenApiTypes.STR,
    enum=["1", "0", "true", "false"],
    description='When no GPU of the type is free: 202 with `{"queued": <waitlist entry>}` (its position; '
    "Location /api/gpu/waitlist/{id}) instead of 409. Granted in order as GPUs free up; never billed before.",
)


class QueryBoolean(serializers.BooleanField):
    """A boolean query parameter as the schema publishes it: true/false or 1/0, nothing
    looser (DRF's own also takes yes/on/t, which the schema does not promise)."""

    TRUE_VALUES = {"true", "1", True}
    FALSE_VALUES = {"false", "0", False}
    NULL_VALUES: set = set()

    def get_value(self, dictionary: Any) -> Any:
        # As given, even empty: DRF would read an empty `?queue=` as "not given".
        return dictionary.get(self.field_name, empty)


class QueueInput(serializers.Serializer):
    queue = QueryBoolean(
        required=False,
        default=False,
        help_text="1: when no GPU of the type is free, wait in line (202, a waitlist entry).",
    )


class WaitlistOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    gpu_type = serializers.CharField(source="gpu_type.sku", read_only=True)
    template = serializers.CharField(source="template.slug", read_only=True)
    position = serializers.SerializerMethodField()
    instance = serializers.SerializerMethodField()

    class Meta:
        model = WaitlistEntry
        fields = ("id", "status", "position", "gpu_type", "template", "instance", "reason", "created_at", "ended_at")
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="1: next in line; null unless waiting."))
    def get_position(self, entry: WaitlistEntry) -> int | None:
        return waitlist.waitlist_position(entry=entry)

    @extend_schema_field(serializers.CharField(allow_null=True, help_text="The instance it started as, once granted."))
    def get_instance(self, entry: WaitlistEntry) -> str | None:
        return entry.instance.public_id if entry.instance is not None else None


def queued_response(entry: WaitlistEntry) -> Response:
    return Response(
        {"queued": WaitlistOutput(entry).data},
        status=status.HTTP_202_ACCEPTED,
        headers={"Location": f"/api/gpu/waitlist/{entry.public_id}"},
    )


class WaitlistListApi(generics.ListAPIView):
    serializer_class = WaitlistOutput

    def get_queryset(self) -> Any:
        entries = WaitlistEntry.objects.filter(owner_id=self.request.user.pk)
        return entries.select_related("gpu_type", "template", "instance").order_by("-created_at", "-id")

    @extend_schema(
        summary="My waitlist entries, newest first",
        tags=["instances"],
        responses={200: WaitlistOutput(many=True), **error_responses(400)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class WaitlistDetailApi(APIView):
    @extend_schema(
        summary="A waitlist entry and its position",
        tags=["instances"],
        responses={200: WaitlistOutput, **error_responses(404)},
    )
    def get(self, request: Request, id: str) -> Response:
        return Response(WaitlistOutput(waitlist.waitlist_get(user=request.user, public_id=id)).data)

    @extend_schema(
        summary="Cancel a waiting entry",
        tags=["instances"],
        responses={200: WaitlistOutput, **error_responses(404, 409)},
    )
    def delete(self, request: Request, id: str) -> Response:
        entry = waitlist.waitlist_cancel(entry=waitlist.waitlist_get(user=request.user, public_id=id))
        return Response(WaitlistOutput(entry).data)
