"""Data stewards may activate matcher models (change_matchermodel); viewers see them."""

from django.db import migrations

from hub.roles import ensure_roles_in_migration


def refresh_roles(apps, schema_editor):
    ensure_roles_in_migration(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0017_default_guard_rules"),
        ("integrations", "0017_metrics"),
        ("marketing_cloud", "0014_reconciliation_per_business_unit"),
        ("downstream", "0003_target_health_in_connector_state"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [migrations.RunPython(refresh_roles, migrations.RunPython.noop)]
