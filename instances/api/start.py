"""POST /instances/<id>/start: start a stopped instance, on another host when its own
cannot take it and the customer confirmed the move (`?move=1`, instances.services.move)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gpucloud.errors import error_responses
from instances import services
from instances.api.instances import NOTE_STARTING, InstanceOutput, _body, _instance

MOVE_PARAM = OpenApiParameter(
    "move",
    OpenApiTypes.BOOL,
    description="true: when the instance's host cannot take it (no free GPU of its type, draining, unreachable) "
    "and another can, move its workspace there and start it there. Without it such a start answers 409 "
    "`instances:move-required` with `detail.size_bytes` (the workspace's size) and `detail.reason`.",
)


class StartQuery(serializers.Serializer):
    move = serializers.BooleanField(required=False, default=False)


class InstanceStartApi(APIView):
    @extend_schema(
        summary="Start a stopped instance",
        description=NOTE_STARTING
        + " A start that moves the workspace answers 202 with the instance still `stopped`: it starts on "
        "its new host once the move (on its timeline: move-requested, snapshot-ready, restored, moved) is done.",
        tags=["instances"],
        request=None,
        parameters=[MOVE_PARAM],
        responses={202: InstanceOutput, **error_responses(400, 402, 404, 409, 503)},
        operation_id="instances_start",
    )
    def post(self, request: Request, id: str) -> Response:
        query = StartQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        instance = services.instance_start(
            instance=_instance(request, id), actor=request.user, source="user", move=query.validated_data["move"]
        )
        return Response(_body(request, instance), status=status.HTTP_202_ACCEPTED)
