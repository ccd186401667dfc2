"""Idle stop, maximum runtime and keep-alive of one of my instances."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gpucloud.errors import error_responses
from instances import selectors
from instances.services import idle_rules

CLEARABLE = ("idle_seconds", "max_runtime_seconds")


class IdleInput(serializers.Serializer):
    idle_seconds = serializers.IntegerField(required=False, allow_null=True, help_text="null: the operator's default.")
    idle_disabled = serializers.BooleanField(required=False)
    max_runtime_seconds = serializers.IntegerField(
        required=False, allow_null=True, help_text="null: the operator's default for the GPU type."
    )


class KeepAliveInput(serializers.Serializer):
    seconds = serializers.IntegerField(default=3600, help_text="How long to count the instance as active.")


IdleOutput = inline_serializer(
    "InstanceIdle",
    {
        "idle_seconds": serializers.IntegerField(help_text="In effect; 0: no idle stop."),
        "idle_disabled": serializers.BooleanField(),
        "max_runtime_seconds": serializers.IntegerField(help_text="In effect; 0: none."),
        "gpu_threshold_percent": serializers.IntegerField(),
        "operator": serializers.DictField(),
        "activity": serializers.DictField(),
        "keep_alive_until": serializers.DateTimeField(allow_null=True),
        "idle_stop_at": serializers.DateTimeField(allow_null=True),
        "runtime_stop_at": serializers.DateTimeField(allow_null=True),
        "warnings": serializers.ListField(child=serializers.DictField()),
    },
)


def _state(request: Request, instance: Any) -> dict[str, Any]:
    return {"id": instance.public_id, **idle_rules.idle_state(instance=instance)}


class InstanceIdleApi(APIView):
    @extend_schema(
        summary="Idle stop and maximum runtime",
        tags=["instances"],
        responses={200: IdleOutput, **error_responses(404)},
    )
    def get(self, request: Request, id: str) -> Response:
        return Response(_state(request, selectors.instance_get(user=request.user, public_id=id)))

    @extend_schema(
        summary="Change idle stop and maximum runtime",
        description="Within the operator's limits: the idle window may be lengthened up to its maximum, idle "
        "stop turned off where allowed (400 `instances:invalid-idle-settings` otherwise).",
        tags=["instances"],
        request=IdleInput,
        responses={200: IdleOutput, **error_responses(400, 404)},
    )
    def patch(self, request: Request, id: str) -> Response:
        instance = selectors.instance_get(user=request.user, public_id=id)
        body = IdleInput(data=request.data)
        body.is_valid(raise_exception=True)
        values = dict(body.validated_data)
        clear = tuple(name for name in CLEARABLE if name in values and values[name] is None)
        idle_rules.idle_settings_update(
            instance=instance,
            actor=request.user,
            idle_seconds=values.get("idle_seconds"),
            idle_disabled=values.get("idle_disabled"),
            max_runtime_seconds=values.get("max_runtime_seconds"),
            clear=clear,
        )
        return Response(_state(request, instance))


class InstanceKeepAliveApi(APIView):
    @extend_schema(
        summary="Keep an instance alive (postpone its idle stop)",
        tags=["instances"],
        request=KeepAliveInput,
        responses={200: IdleOutput, **error_responses(400, 404, 409)},
    )
    def post(self, request: Request, id: str) -> Response:
        instance = selectors.instance_get(user=request.user, public_id=id)
        body = KeepAliveInput(data=request.data)
        body.is_valid(raise_exception=True)
        idle_rules.keep_alive(instance=instance, actor=request.user, seconds=body.validated_data["seconds"])
        return Response(_state(request, instance))
