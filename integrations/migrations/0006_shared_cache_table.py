"""The database cache table shared by every process (throttle counters)."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", "hub_shared_cache", database=schema_editor.connection.alias, verbosity=0)


def drop_cache_table(apps, schema_editor):
    schema_editor.execute("DROP TABLE IF EXISTS hub_shared_cache")


class Migration(migrations.Migration):
    dependencies = [("integrations", "0005_erase_scope")]

    operations = [migrations.RunPython(create_cache_table, drop_cache_table)]
