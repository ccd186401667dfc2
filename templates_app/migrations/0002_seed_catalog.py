from django.db import migrations


def seed(apps, schema_editor):
    from templates_app.catalog import CATALOG

    Template = apps.get_model("templates_app", "Template")
    for entry in CATALOG:
        Template.objects.get_or_create(slug=entry["slug"], defaults={k: v for k, v in entry.items() if k != "slug"})


class Migration(migrations.Migration):
    dependencies = [("templates_app", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
