"""Both roles may read the configuration change log (django-auditlog's entries)."""

from django.db import migrations

from hub.roles import ensure_roles_in_migration


def refresh_roles(apps, schema_editor):
    ensure_roles_in_migration(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0013_api_key_sources"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [migrations.RunPython(refresh_roles, migrations.RunPython.noop)]
