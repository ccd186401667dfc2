from decimal import Decimal

from django.db import migrations

GPU_TYPES = [
    {"sku": "rtx-5090", "display_name": "RTX 5090", "rate_per_hour": Decimal("1.49"), "memory_mb": 32607,
     "cpu_limit": Decimal("8"), "ram_limit_mb": 49152},
    {"sku": "rtx-pro-6000", "display_name": "RTX PRO 6000", "rate_per_hour": Decimal("2.99"), "memory_mb": 97887,
     "cpu_limit": Decimal("16"), "ram_limit_mb": 98304},
]


def seed(apps, schema_editor):
    GpuType = apps.get_model("instances", "GpuType")
    for entry in GPU_TYPES:
        GpuType.objects.get_or_create(sku=entry["sku"], defaults=entry)


class Migration(migrations.Migration):
    dependencies = [("instances", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
