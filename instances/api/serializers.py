"""Serializers of the instances API besides the instance itself (InstanceOutput lives
with its views and the notes it shows, in instances.api.instances): launch input, the
timeline, availability, and how rates are written."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from instances.access.sshkeys import MAX_KEY_CHARS
from instances.models import InstanceEvent


def money(value: Decimal) -> str:
    """A rate as customers read it: at least two decimals, no trailing zeros beyond."""
    value = Decimal(value).normalize()
    if value.as_tuple().exponent > -2:  # type: ignore[operator]
        value = value.quantize(Decimal("0.01"))
    return f"{value:f}"


class BillingSerializer(serializers.Serializer):
    rate = serializers.CharField(help_text="USD per unit, a decimal string.")
    unit = serializers.CharField()


class InstanceCreateInput(serializers.Serializer):
    template = serializers.CharField(max_length=64, help_text="Catalog slug, e.g. 'pytorch'.")
    gpu = serializers.CharField(max_length=64, help_text="GPU type SKU, e.g. 'rtx-5090'.")
    storage = serializers.IntegerField(help_text="GB of /workspace (bounds: GPUCLOUD_STORAGE_GB_MIN/MAX).")
    access = serializers.ListField(
        child=serializers.CharField(max_length=32), max_length=8, required=False, default=list,
        help_text="Access methods of the template, e.g. ['ssh', 'jupyter']; empty: all it offers.",
    )  # fmt: skip
    name = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    ssh_keys = serializers.ListField(
        child=serializers.CharField(max_length=MAX_KEY_CHARS), max_length=32, required=False, default=list,
        help_text="Ids or SHA256 fingerprints of my saved keys, or public keys.",
    )  # fmt: skip
    ssh_password_auth = serializers.BooleanField(required=False, default=True)
    env = serializers.DictField(
        child=serializers.CharField(max_length=4096, allow_blank=True), required=False, default=dict
    )
    snapshot = serializers.CharField(
        max_length=32, required=False, allow_blank=True, default="",
        help_text="One of my ready snapshots: the new workspace starts with its files (it must fit `storage`).",
    )  # fmt: skip

    def validate_env(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 64:
            raise serializers.ValidationError("At most 64 variables.")
        return value


class EventOutput(serializers.ModelSerializer):
    class Meta:
        model = InstanceEvent
        fields = ("at", "kind", "source", "message")


class AvailabilityOutput(serializers.Serializer):
    sku = serializers.CharField()
    display_name = serializers.CharField()
    rate_per_hour = serializers.SerializerMethodField()
    total = serializers.IntegerField()
    free = serializers.IntegerField()

    @extend_schema_field(serializers.CharField(help_text="USD per hour, a decimal string."))
    def get_rate_per_hour(self, obj: dict[str, Any]) -> str:
        return money(obj["rate_per_hour"])
