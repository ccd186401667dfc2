"""My webhooks, their delivery log (with replay), and my notification preferences."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gpucloud.errors import error_responses
from instances.notify import services
from instances.notify.models import WebhookDelivery, WebhookEndpoint


class WebhookInput(serializers.Serializer):
    url = serializers.URLField(max_length=500)
    description = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)


class WebhookOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = ("id", "url", "description", "enabled", "created_at")


class DeliveryOutput(serializers.ModelSerializer):
    endpoint = serializers.IntegerField(source="endpoint_id")
    url = serializers.CharField(source="endpoint.url")
    replay_of = serializers.IntegerField(source="replay_of_id", allow_null=True)

    class Meta:
        model = WebhookDelivery
        fields = (
            "id",
            "endpoint",
            "url",
            "event",
            "event_id",
            "status",
            "last_status_code",
            "attempts",
            "replay_of",
            "created_at",
            "finished_at",
            "payload",
        )


class WebhookListApi(generics.ListAPIView):
    serializer_class = WebhookOutput

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        return services.endpoints_of(user=self.request.user)

    @extend_schema(
        summary="My webhook endpoints", tags=["notifications"], responses={200: WebhookOutput, **error_responses(400)}
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Register a webhook endpoint",
        description="Answers its signing secret once (`secret`). Deliveries carry `GpuCloud-Signature: "
        "t=<unix time>,v1=<hex HMAC-SHA256 of '<t>.<body>'>`. Private, loopback and link-local addresses are "
        "refused (400 `notify:invalid-webhook-url`).",
        tags=["notifications"],
        request=WebhookInput,
        responses={201: WebhookOutput, **error_responses(400, 409)},
    )
    def post(self, request: Request) -> Response:
        body = WebhookInput(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint, secret = services.endpoint_create(user=request.user, **body.validated_data)
        return Response({**WebhookOutput(endpoint).data, "secret": secret}, status=status.HTTP_201_CREATED)


class WebhookDetailApi(APIView):
    @extend_schema(
        summary="Remove a webhook endpoint", tags=["notifications"], responses={204: None, **error_responses(404)}
    )
    def delete(self, request: Request, webhook_id: int) -> Response:
        services.endpoint_delete(user=request.user, endpoint_id=webhook_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeliveryListApi(generics.ListAPIView):
    serializer_class = DeliveryOutput

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        return services.deliveries_of(user=self.request.user)

    @extend_schema(
        summary="The delivery log of my webhooks (newest first)",
        tags=["notifications"],
        responses={200: DeliveryOutput, **error_responses(400)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class DeliveryReplayApi(APIView):
    @extend_schema(
        summary="Send a delivery's event again",
        tags=["notifications"],
        request=None,
        responses={202: DeliveryOutput, **error_responses(404)},
    )
    def post(self, request: Request, delivery_id: int) -> Response:
        delivery = services.delivery_get(user=request.user, delivery_id=delivery_id)
        replay = services.delivery_replay(delivery=delivery)
        return Response(DeliveryOutput(replay).data, status=status.HTTP_202_ACCEPTED)


PreferencesOutput = inline_serializer("NotificationPreferences", {"preferences": serializers.DictField()})


class PreferencesApi(APIView):
    @extend_schema(
        summary="Which events go to which channel",
        tags=["notifications"],
        responses={200: PreferencesOutput, **error_responses()},
    )
    def get(self, request: Request) -> Response:
        return Response({"preferences": services.preferences(user=request.user)})

    @extend_schema(
        summary="Turn events on or off per channel",
        description='Body: `{"preferences": {"instance.running": {"email": false}}}`.',
        tags=["notifications"],
        request=PreferencesOutput,
        responses={200: PreferencesOutput, **error_responses(400)},
    )
    def patch(self, request: Request) -> Response:
        wanted = request.data.get("preferences") if isinstance(request.data, dict) else None
        if not isinstance(wanted, dict):
            raise serializers.ValidationError({"preferences": "an object of events, each an object of channels"})
        return Response({"preferences": services.preferences_set(user=request.user, wanted=wanted)})
