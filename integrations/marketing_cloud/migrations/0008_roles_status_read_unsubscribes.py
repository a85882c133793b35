"""Data stewards may run the subscriber status read and retry unsubscribes (hub.roles)."""

from django.db import migrations

from hub.roles import ensure_roles_in_migration


def refresh_roles(apps, schema_editor):
    ensure_roles_in_migration(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("marketing_cloud", "0007_status_read_unsubscribes_contact_deletions"),
        ("integrations", "0015_dead_letter_error_detail"),
    ]

    operations = [migrations.RunPython(refresh_roles, migrations.RunPython.noop)]
