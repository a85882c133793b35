"""The two roles of the steward workspace, as groups (see hub.roles)."""

from django.db import migrations

from hub.roles import ensure_roles_in_migration


def create_roles(apps, schema_editor):
    ensure_roles_in_migration(apps)


def drop_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Viewer", "Data steward"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0009_steward_scope"),
        ("customers", "0007_default_rules"),
        ("marketing_cloud", "0003_import_job"),
        ("downstream", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, drop_roles)]
