"""Instances of the authenticated user: launch, list, read, stop, start, restart, destroy.
Every lookup goes through `selectors.instance_get(user=...)`, so another user's
instance is a 404 on every route. Launching is asynchronous: 202 with the instance
(status `pending`) and a Location; `?wait=SECONDS` polls the row until it is
`running` or `failed`, for at most GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS (below gunicorn's
worker timeout), then answers 202 with the instance as it is. An `Idempotency-Key`
header makes a retried launch return the first one's instance.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from gpucloud.errors import error_responses
from instances import cache as apicache
from instances import selectors, services
from instances.access.addresses import access_for
from instances.access.authentication import InstanceCreateThrottle
from instances.access.sshkeys import sshkeys_resolve
from instances.access.tokens import TokenAuth
from instances.api.serializers import (
    AvailabilityOutput,
    BillingSerializer,
    EventOutput,
    InstanceCreateInput,
    money,
)
from instances.api.snapshots import DESTROY_SNAPSHOT_PARAM, instance_destroy_asked
from instances.api.storage import WorkspaceUsageField
from instances.api.waitlist import QUEUE_PARAM, QueueInput, queued_response
from instances.errors import InvalidIdempotencyKey
from instances.models import Instance, InstanceEvent, WaitlistEntry

# What `?wait=` accepts; the wait itself stops at GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS.
WAIT_MAX_SECONDS, WAIT_POLL_SECONDS = 120, 0.5
LOG_LINES_MAX = 1000
SETTLED = (Instance.Status.RUNNING, Instance.Status.FAILED)

NOTE_STOPPED = "Data in the workspace is kept. Starting again allocates a free GPU of the same type, which may be a different device."
NOTE_STARTING = "Data in the workspace is kept. It starts on a free GPU of the same type, which may be a different device than before."
NOTE_RESTART = "A restart keeps its GPU, its ports and the workspace: only the container is made again."


def paginate_counted(
    *, paginator: LimitOffsetPagination, request: Request, fetch: Callable[[int, int], tuple[list, int]]
) -> list:
    """One page through the API's paginator (its bounds on limit and offset apply) over
    `selectors.instance_page`, whose page carries its total (COUNT(*) OVER ()): one query
    for both. Sets what its own paginate_queryset would; ValidationError past the end."""
    paginator.request = request
    limit: int = paginator.get_limit(request) or api_settings.PAGE_SIZE or 20
    paginator.limit, paginator.offset = limit, paginator.get_offset(request)
    page, paginator.count = fetch(paginator.offset, limit)
    if not page and paginator.offset:  # an empty page past the end still needs the real total for its links
        paginator.count = fetch(0, 1)[1]
    if paginator.count > limit and paginator.template is not None:
        paginator.display_page_controls = True
    return page


def _note(instance: Instance) -> str | None:
    # What the state means for the customer's data and GPU, while it matters: on the
    # way to and in `stopped`, and while starting or restarting (which the last request
    # on its timeline tells; a query only for an instance in `starting`). A running
    # instance needs none.
    if instance.status in (Instance.Status.STOPPING, Instance.Status.STOPPED):
        return NOTE_STOPPED
    if instance.status == Instance.Status.STARTING:
        return NOTE_RESTART if selectors.start_is_restart(instance_id=instance.pk) else NOTE_STARTING
    return None


class InstanceOutput(serializers.ModelSerializer):
    """An instance: a container on one GPU, its workspace, how to reach it, what it costs."""

    # The body served and the schema published; reads an instance with its template, GPU type,
    # host and ports loaded (selectors); password and token only for its owner.
    id = serializers.CharField(source="public_id", read_only=True)
    gpu = serializers.CharField(source="gpu_type.display_name", read_only=True, help_text="GPU type, e.g. 'RTX 5090'.")
    gpu_type = serializers.CharField(source="gpu_type.sku", read_only=True)
    template = serializers.CharField(source="template.slug", read_only=True)
    storage = serializers.IntegerField(source="storage_gb", read_only=True, help_text="GB of /workspace.")
    workspace = WorkspaceUsageField()
    host = serializers.CharField(
        source="host.name", read_only=True, allow_null=True, help_text="The host it runs on; null before scheduling."
    )
    access = serializers.SerializerMethodField(
        help_text="`ssh` command, `jupyter`/`code-server`/`terminal` URLs, `http` and `tcp` maps; "
        "`password` and `token` only for the owner."
    )
    status = serializers.ChoiceField(
        choices=[*Instance.Status.values, "unreachable"], source="status_shown", read_only=True
    )
    error = serializers.CharField(source="error_shown", read_only=True, allow_null=True)
    billing = serializers.SerializerMethodField()
    note = serializers.SerializerMethodField(
        help_text="While stopping, stopped or starting: what it means for the workspace and the GPU."
    )

    class Meta:
        model = Instance
        fields = (
            "id",
            "name",
            "status",
            "gpu",
            "gpu_type",
            "template",
            "storage",
            "workspace",
            "host",
            "access",
            "created_at",
            "started_at",
            "stopped_at",
            "error",
            "billing",
            "note",
            "progress",
        )
        read_only_fields = fields
        extra_kwargs = {
            "started_at": {
                "help_text": "When the current billed GPU segment began: when its container started, "
                "before its services answered (a start that never answers is billed too, 60 s minimum)."
            },
            "stopped_at": {"help_text": "When the last billed GPU segment ended."},
            "progress": {"help_text": "While the host pulls the image: e.g. 'pulling 2.1 of 7.9 GB' (not billed)."},
        }

    @extend_schema_field(serializers.DictField())
    def get_access(self, instance: Instance) -> dict[str, Any]:
        user = getattr(self.context.get("request"), "user", None)
        owner = user is not None and user.is_authenticated and user.pk == instance.owner_id
        return access_for(instance=instance, reveal_secrets=owner)

    @extend_schema_field(BillingSerializer)
    def get_billing(self, instance: Instance) -> dict[str, str]:
        return {"rate": money(instance.gpu_type.rate_per_hour), "unit": "hour"}

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_note(self, instance: Instance) -> str | None:
        return _note(instance)


class WaitInput(serializers.Serializer):
    wait = serializers.IntegerField(min_value=0, max_value=WAIT_MAX_SECONDS, required=False, default=0)


class LogsInput(serializers.Serializer):
    lines = serializers.IntegerField(min_value=1, max_value=LOG_LINES_MAX, required=False, default=100)


def _instance(request: Request, public_id: str) -> Instance:
    return selectors.instance_get(user=request.user, public_id=public_id)


def _body(request: Request, instance: Instance) -> Any:
    # Read again, joined: services return the row they wrote.
    shown = selectors.instance_get(user=request.user, public_id=instance.public_id)
    return InstanceOutput(shown, context={"request": request}).data


def _wait(request: Request, instance: Instance, seconds: int) -> Instance:
    # Capped below gunicorn's --timeout: past it the worker is killed mid-request and the
    # client sees an error for an instance that exists (and may launch it again).
    deadline = time.monotonic() + min(seconds, settings.GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS)
    while instance.status not in SETTLED and time.monotonic() < deadline:
        time.sleep(WAIT_POLL_SECONDS)
        instance.refresh_from_db(fields=["status"])
    return instance


def _idempotency(request: Request, body: dict[str, Any]) -> tuple[str, str]:
    """The request's Idempotency-Key and the fingerprint of its validated body ("" without
    a key). Raises InvalidIdempotencyKey for an empty, overlong or non-printable key."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return "", ""
    if not 0 < len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise InvalidIdempotencyKey()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return key, hashlib.sha256(canonical.encode()).hexdigest()


WAIT_PARAM = OpenApiParameter(
    "wait",
    OpenApiTypes.INT,
    description=f"Seconds (0-{WAIT_MAX_SECONDS}) to wait for running or failed; the server waits at most "
    "GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS (default 20), then answers 202 with the instance as it is.",
)
IDEMPOTENCY_PARAM = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    description="Up to 255 printable ASCII characters, unique per launch (e.g. a UUID). A retry with the same "
    "key and body gets the first launch's instance as it is now (202), never a second instance; the same key "
    "with another body → 422 `instances:idempotency-key-reused`. Keys expire after "
    "GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS (default 24 h).",
)
STATUS_PARAM = OpenApiParameter("status", OpenApiTypes.STR, enum=Instance.Status.values, description="Only these.")


class RenderedJSON(bytes):
    """A body already rendered to JSON (the list's cache)."""


class CachedJSONRenderer(JSONRenderer):
    """DRF's JSON renderer, passing a RenderedJSON through as it is."""

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, RenderedJSON):
            return bytes(data)
        return super().render(data, accepted_media_type, renderer_context)


class InstanceListApi(generics.GenericAPIView):
    serializer_class = InstanceOutput
    throttle_classes = (InstanceCreateThrottle,)
    renderer_classes = (CachedJSONRenderer, BrowsableAPIRenderer)

    def get_queryset(self) -> QuerySet[Instance]:  # for the browsable API's forms
        return selectors.instance_list(user=self.request.user)

    @extend_schema(
        summary="List my instances",
        tags=["instances"],
        parameters=[STATUS_PARAM],
        responses={200: InstanceOutput(many=True), **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        # Checked by hand, as a serializer's ChoiceField would (the list is the hot path).
        wanted = request.query_params.get("status")
        if wanted is not None and wanted not in Instance.Status.values:
            raise serializers.ValidationError({"status": [f'"{wanted}" is not a valid choice.']})

        # Token requests carry the versions read before any database read (apicache):
        # their JSON is kept rendered, per page as asked (the links name host and query).
        stamp = request.auth.stamp if isinstance(request.auth, TokenAuth) else None
        if stamp is None or request.accepted_renderer.format != "json" or "indent" in request.accepted_media_type:
            return Response(self._page(request, wanted))
        key = ("instances", request.user.pk, request.scheme, request.get_host(), request.get_full_path())
        return Response(
            apicache.list_get(
                key, stamp, lambda: RenderedJSON(CachedJSONRenderer().render(self._page(request, wanted)))
            )
        )

    def _page(self, request: Request, status: str | None) -> Any:
        """The paginated body, read from the database."""

        def fetch(offset: int, limit: int) -> tuple[list, int]:
            page, total = selectors.instance_page(user=request.user, status=status, offset=offset, limit=limit)
            return self.get_serializer(page, many=True).data, total

        paginator = self.paginator
        if not isinstance(paginator, LimitOffsetPagination):  # the API's default; narrows the type
            raise TypeError("InstanceListApi pages with a LimitOffsetPagination")
        return paginator.get_paginated_response(
            paginate_counted(paginator=paginator, request=request, fetch=fetch)
        ).data

    @extend_schema(
        summary="Launch an instance",
        description="Asynchronous: 202 with the instance (`pending`) and its Location. "
        "Unknown template or GPU type, storage out of bounds, a bad access method → 400; "
        "no free GPU → 409 with `detail.availability`; balance too low → 402. "
        "Send an `Idempotency-Key` to retry safely.",
        tags=["instances"],
        parameters=[WAIT_PARAM, IDEMPOTENCY_PARAM, QUEUE_PARAM],
        request=InstanceCreateInput,
        responses={202: InstanceOutput, **error_responses(400, 402, 409, 422, 503)},
        examples=[
            OpenApiExample(
                "PyTorch on an RTX 5090",
                value={"template": "pytorch", "gpu": "rtx-5090", "storage": 50, "access": ["ssh", "jupyter"]},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        query = WaitInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = InstanceCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        body = data.validated_data
        key, fingerprint = _idempotency(request, body)
        queue = QueueInput(data=request.query_params)
        queue.is_valid(raise_exception=True)
        instance = services.launch_or_queue(
            queue=queue.validated_data["queue"],
            user=request.user,
            template=body["template"],
            gpu_type=body["gpu"],
            storage_gb=body["storage"],
            access=body["access"],
            name=body["name"],
            ssh_public_keys=sshkeys_resolve(user=request.user, refs=body["ssh_keys"]),
            ssh_password_auth=body["ssh_password_auth"],
            env=body["env"],
            snapshot=body["snapshot"],
            actor=request.user,
            idempotency_key=key,
            fingerprint=fingerprint,
        )
        if isinstance(instance, WaitlistEntry):
            return queued_response(instance)
        if query.validated_data["wait"]:
            instance = _wait(request, instance, query.validated_data["wait"])
        location = f"/api/gpu/instances/{instance.public_id}"
        return Response(_body(request, instance), status=status.HTTP_202_ACCEPTED, headers={"Location": location})


class InstanceDetailApi(APIView):
    @extend_schema(
        summary="One of my instances", tags=["instances"], responses={200: InstanceOutput, **error_responses(404)}
    )
    def get(self, request: Request, id: str) -> Response:
        return Response(InstanceOutput(_instance(request, id), context={"request": request}).data)

    @extend_schema(
        summary="Destroy an instance",
        description="Asynchronous: the container is removed, then the workspace after a grace period. "
        "`?snapshot=1` snapshots the workspace first (destroy and keep a snapshot).",
        tags=["instances"],
        parameters=[DESTROY_SNAPSHOT_PARAM],
        responses={202: InstanceOutput, **error_responses(400, 404, 409, 503)},
    )
    def delete(self, request: Request, id: str) -> Response:
        instance = instance_destroy_asked(request=request, instance=_instance(request, id))
        return Response(_body(request, instance), status=status.HTTP_202_ACCEPTED)


def _action(name: str, summary: str, description: str) -> type[APIView]:
    service = getattr(services, f"instance_{name}")

    class ActionApi(APIView):
        @extend_schema(
            summary=summary,
            description=description,
            tags=["instances"],
            request=None,
            responses={202: InstanceOutput, **error_responses(402, 404, 409, 503)},
            operation_id=f"instances_{name}",
        )
        def post(self, request: Request, id: str) -> Response:
            instance = service(instance=_instance(request, id), actor=request.user, source="user")
            return Response(_body(request, instance), status=status.HTTP_202_ACCEPTED)

    ActionApi.__name__ = ActionApi.__qualname__ = f"Instance{name.title()}Api"
    return ActionApi


InstanceStopApi = _action("stop", "Stop an instance, keep its data", NOTE_STOPPED)
InstanceRestartApi = _action("restart", "Restart an instance", NOTE_RESTART)


class InstanceEventsApi(generics.ListAPIView):
    serializer_class = EventOutput

    def get_queryset(self) -> QuerySet[InstanceEvent]:
        return selectors.instance_events(instance=_instance(self.request, self.kwargs["id"]))

    @extend_schema(
        summary="The instance's timeline", tags=["instances"], responses={200: EventOutput, **error_responses(404)}
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class InstanceLogsApi(APIView):
    @extend_schema(
        summary="The last lines of the container's output",
        tags=["instances"],
        parameters=[OpenApiParameter("lines", OpenApiTypes.INT, description=f"1-{LOG_LINES_MAX}, default 100.")],
        responses={
            200: inline_serializer("InstanceLogs", {"id": serializers.CharField(), "logs": serializers.CharField()}),
            **error_responses(400, 404, 503),
        },
    )
    def get(self, request: Request, id: str) -> Response:
        query = LogsInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        instance = _instance(request, id)
        logs = services.instance_logs(instance=instance, lines=query.validated_data["lines"])
        return Response({"id": instance.public_id, "logs": logs})


class AvailabilityApi(APIView):
    @extend_schema(
        summary="Per GPU type: total, free, hourly rate",
        tags=["instances"],
        responses={200: AvailabilityOutput(many=True), **error_responses()},
    )
    def get(self, request: Request) -> Response:
        return Response(AvailabilityOutput(selectors.availability(), many=True).data)
