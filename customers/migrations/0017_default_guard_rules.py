"""Issue 13: the default guard rules (they block an auto-merge by match weight; inert without a matcher model)."""

from django.db import migrations

from customers.defaults import seed_rules


def update(apps, schema_editor):
    seed_rules(apps.get_model("customers", "MatchRule"), apps.get_model("customers", "SurvivorshipRule"))


class Migration(migrations.Migration):
    dependencies = [("customers", "0016_matcher_model")]

    operations = [migrations.RunPython(update, migrations.RunPython.noop)]
