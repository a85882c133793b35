"""Issue 13: golden records stored before get the new blocking key kind (postal code + first name).

The keys come from the same code the resolution engine and the backfill write them with
(``UnitOfWork.rewrite_keys``, through ``manage.py rebuild_match_keys``), which also
rewrites the stored match profiles: their address keys now name any ISO 3166 country by
its alpha-2 code. On an empty database (tests, a new install) it does nothing.
"""

from django.core.management import call_command
from django.db import migrations


def rebuild_keys(apps, schema_editor):
    Individual = apps.get_model("customers", "Individual")
    if Individual.objects.exists():
        call_command("rebuild_match_keys")


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0013_source_status_and_deliverability"),
    ]

    operations = [migrations.RunPython(rebuild_keys, migrations.RunPython.noop)]
