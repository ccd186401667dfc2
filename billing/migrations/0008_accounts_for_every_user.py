"""Every user has a billing account (billing.signals makes one at sign-up from now on):
users who signed up before get theirs here, with a zero balance."""

from django.conf import settings
from django.db import migrations


def accounts_create(apps, schema_editor):
    user_model = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    account_model = apps.get_model("billing", "BillingAccount")
    missing = user_model.objects.filter(billing_account__isnull=True).values_list("pk", flat=True)
    account_model.objects.bulk_create([account_model(user_id=pk) for pk in missing], ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0007_user_limits"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(accounts_create, migrations.RunPython.noop)]
