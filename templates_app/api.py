"""The catalog API: every customer reads it; staff may add, edit and remove entries.

Customers can only ever launch what is here, so writes need staff and the model's
permission (`templates_app.add_template` / `change_template` / `delete_template`), and
every written field passes templates_app.validation, the check the admin's form runs too.
"""

from __future__ import annotations

from typing import Any

from django.db.models import ProtectedError, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, permissions, serializers
from rest_framework.request import Request

from gpucloud.errors import error_responses
from templates_app.errors import TemplateInUse
from templates_app.models import Template
from templates_app.validation import ALLOWED_CAPS, PROTOCOLS, TEMPLATE_FIELDS, template_problems


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
        fields = TEMPLATE_FIELDS

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The catalog's one check (templates_app.validation), shared with the admin."""
        problems = template_problems(values=attrs)
        if problems:
            raise serializers.ValidationError(problems)
        return attrs


class CatalogPermission(permissions.DjangoModelPermissions):
    """Reads for every authenticated user; a write needs staff *and* the model's
    permission for it (add / change / delete), so a staff user given only some of the
    catalog's permissions in the admin has only those here too."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        return bool(request.user.is_staff) and super().has_permission(request, view)


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
    permission_classes = (CatalogPermission,)

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
    permission_classes = (CatalogPermission,)
    lookup_field = "slug"
    http_method_names = ("get", "patch", "delete", "head", "options")

    def get_queryset(self) -> QuerySet[Template]:
        return _templates(self.request)

    def perform_destroy(self, instance: Template) -> None:
        try:
            instance.delete()
        except ProtectedError:
            raise TemplateInUse from None
