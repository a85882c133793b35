"""API keys bound to the source systems they may send.

A key that already sent events keeps the sources it sent accepted events for, except the
reserved ones (the steward's, Marketing Cloud's and the master-ID types): the integration
that uses it keeps working, and no key keeps a right it should never have had.
"""

import django.contrib.postgres.fields
from django.db import migrations, models

import integrations.models

RESERVED = ["STEWARD", "MARKETING_CLOUD", "MDM", "GLOBAL"]


def bind_sources_already_sent(apps, schema_editor):
    ApiClient = apps.get_model("integrations", "ApiClient")
    InboundEvent = apps.get_model("integrations", "InboundEvent")
    for client in ApiClient.objects.filter(scopes__contains=["ingest"]):
        sent = (
            InboundEvent.objects.filter(api_client=client, channel="api")
            .exclude(status="rejected")
            .exclude(system__in=RESERVED)
            .values_list("system", flat=True)
            .distinct()
        )
        client.sources = sorted({code for code in sent if code})
        client.save(update_fields=["sources"])


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0012_fewer_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="apiclient",
            name="sources",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(
                    max_length=40, validators=[integrations.models.validate_sendable_source]
                ),
                blank=True,
                default=list,
                help_text=(
                    "Source systems this key may send events for (comma-separated system codes, e.g. POS,B2C_COMMERCE)."
                ),
                size=None,
            ),
        ),
        migrations.RunPython(bind_sources_already_sent, migrations.RunPython.noop),
    ]
