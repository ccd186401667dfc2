"""The catalog API: every customer reads it; staff may add, edit and remove entries.

Customers can only ever launch what is here, so writes are staff-only and checked:
ports must be well-formed, and only capabilities from a short allow-list can be
added back after `cap_drop=ALL`.
"""

from __future__ import annotations

from typing import Any

from django.db.models import ProtectedError, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, permissions, serializers
from rest_framework.request import Request

from gpucloud.errors import error_responses
from templates_app.catalog import SSHD_CAPS
from templates_app.errors import TemplateInUse
from templates_app.models import Template

# Capabilities staff may grant a template: what sshd needs, plus file-ownership ones
# some images use at start. Never SYS_ADMIN, NET_ADMIN, SYS_PTRACE and the like.
ALLOWED_CAPS = frozenset([*SSHD_CAPS, "FOWNER", "FSETID", "DAC_OVERRIDE"])
PROTOCOLS = ("tcp", "http")


class PortSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=32)
    port = serializers.IntegerField(min_value=1, max_value=65535)
    protocol = serializers.ChoiceField(choices=PROTOCOLS)


class TemplateSerializer(serializers.ModelSerializer):
    ports = PortSerializer(many=True, required=False)
    env = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=4096), required=False)
    command = serializers.ListField(child=serializers.CharField(max_length=4096), required=False, max_length=64)
    access_methods = serializers.ListField(
        child=serializers.ChoiceField(choices=Template.AccessMethod.choices), required=False, max_length=8
    )
    cap_add = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(ALLOWED_CAPS)), required=False, max_length=16
    )

    class Meta:
        model = Template
        fields = (
            "slug",
            "name",
            "category",
            "description",
            "image",
            "ports",
            "env",
            "command",
            "access_methods",
            "cap_add",
            "min_gpu_memory_mb",
            "volume_path",
            "enabled",
            "sort_order",
        )

    def validate_ports(self, value: list[dict]) -> list[dict]:
        names = [p["name"] for p in value]
        if len(set(names)) != len(names):
            raise serializers.ValidationError("Port names must be unique.")
        return value

    def validate_volume_path(self, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/"):
            raise serializers.ValidationError("Must be an absolute path without '..'.")
        return value


class IsStaffOrReadOnly(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or bool(request.user.is_staff)


def _templates(request: Request) -> QuerySet[Template]:
    qs = Template.objects.all()
    # Customers see what they can launch; staff also see disabled entries.
    return qs if request.user.is_staff else qs.filter(enabled=True)


@extend_schema_view(
    get=extend_schema(
        summary="List the catalog", tags=["templates"], responses={200: TemplateSerializer, **error_responses(400)}
    ),
    post=extend_schema(
        summary="Add a template (staff)",
        tags=["templates"],
        responses={201: TemplateSerializer, **error_responses(400)},
    ),
)
class TemplateListApi(generics.ListCreateAPIView):
    serializer_class = TemplateSerializer
    permission_classes = (IsStaffOrReadOnly,)

    def get_queryset(self) -> QuerySet[Template]:
        return _templates(self.request)


@extend_schema_view(
    get=extend_schema(
        summary="One template", tags=["templates"], responses={200: TemplateSerializer, **error_responses(404)}
    ),
    patch=extend_schema(
        summary="Edit a template (staff)",
        tags=["templates"],
        responses={200: TemplateSerializer, **error_responses(400, 404)},
    ),
    delete=extend_schema(
        summary="Delete an unused template (staff)",
        tags=["templates"],
        responses={204: None, **error_responses(404, 409)},
    ),
)
class TemplateDetailApi(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = TemplateSerializer
    permission_classes = (IsStaffOrReadOnly,)
    lookup_field = "slug"
    http_method_names = ("get", "patch", "delete", "head", "options")

    def get_queryset(self) -> QuerySet[Template]:
        return _templates(self.request)

    def perform_destroy(self, instance: Template) -> None:
        try:
            instance.delete()
        except ProtectedError:
            raise TemplateInUse from None
