"""Default auto-merge rules also require gender and name suffix not to contradict (unedited rules only)."""

from django.db import migrations


def update(apps, schema_editor):
    from customers.defaults import seed_rules

    seed_rules(apps.get_model("customers", "MatchRule"), apps.get_model("customers", "SurvivorshipRule"))


class Migration(migrations.Migration):
    dependencies = [("customers", "0008_search_indexes")]

    operations = [migrations.RunPython(update, migrations.RunPython.noop)]
