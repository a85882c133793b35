"""Seed the default match and survivorship rules (stewards change them in admin afterwards)."""

from django.db import migrations


def seed(apps, schema_editor):
    from customers.defaults import seed_rules

    seed_rules(apps.get_model("customers", "MatchRule"), apps.get_model("customers", "SurvivorshipRule"))


class Migration(migrations.Migration):
    dependencies = [("customers", "0006_mdm")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
