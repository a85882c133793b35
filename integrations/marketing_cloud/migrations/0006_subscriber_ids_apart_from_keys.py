"""Keep only Marketing Cloud SubscriberIDs in the cross references' ``system_record_id``.

Until now the mapping put the SubscriberKey there when the subscriber data carried no
SubscriberId, and ENS unsubscribes were matched against that column: with numeric keys,
someone whose key equals another subscriber's SubscriberID received that subscriber's
unsubscribes. What each stored value is:

- a number other than the record's SubscriberKey: a SubscriberID (the mapping put one
  there only from an explicit SubscriberId). Kept.
- not a positive number: no SubscriberID (those are positive integers). Cleared.
- equal to the record's SubscriberKey: either the fallback or a SubscriberID that equals
  the key; the value alone cannot tell. Kept only when an event the hub still stores for
  that subscriber (journey call or reconciliation row) carried a SubscriberId equal to it;
  otherwise cleared, not guessed. A cleared record is matched by email address until the
  next journey call or poll that carries its SubscriberId fills the column again.

Backwards: nothing is restored (the fallback values are the SubscriberKeys, which
``external_id`` still holds).
"""

from django.db import migrations

MARKETING_CLOUD = "MARKETING_CLOUD"


def clear_values_that_are_not_subscriber_ids(apps, schema_editor):
    xref_table = apps.get_model("customers", "CrossReference")._meta.db_table
    event_table = apps.get_model("integrations", "InboundEvent")._meta.db_table
    # Stored events' own subscriber data: a journey call's claims (inArguments, a list of
    # one-key objects under the names the activity saved) or a poller row (a flat object).
    confirmed_by_an_event = f"""
        EXISTS (
            SELECT 1 FROM {event_table} e
            WHERE e.system = %(system)s AND e.external_id = x.external_id AND jsonb_typeof(e.payload) = 'object'
              AND (
                EXISTS (
                    SELECT 1 FROM jsonb_each_text(e.payload) kv
                    WHERE lower(kv.key) = 'subscriberid' AND btrim(kv.value) = x.system_record_id
                )
                OR EXISTS (
                    SELECT 1
                    FROM jsonb_array_elements(
                        CASE WHEN jsonb_typeof(e.payload -> 'inArguments') = 'array'
                             THEN e.payload -> 'inArguments' ELSE '[]'::jsonb END
                    ) argument,
                    jsonb_each_text(CASE WHEN jsonb_typeof(argument) = 'object' THEN argument ELSE '{{}}'::jsonb END) kv
                    WHERE lower(kv.key) = 'subscriberid' AND btrim(kv.value) = x.system_record_id
                )
              )
        )
    """
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {xref_table} x SET system_record_id = ''
            WHERE x.system = %(system)s AND x.system_record_id <> ''
              AND (
                x.system_record_id !~ '^[0-9]+$'
                OR x.system_record_id ~ '^0+$'
                OR (x.system_record_id = x.external_id AND NOT {confirmed_by_an_event})
              )
            """,
            {"system": MARKETING_CLOUD},
        )


class Migration(migrations.Migration):
    dependencies = [
        ("marketing_cloud", "0005_ens_handshake_awaits_registration"),
        ("customers", "0012_list_consent"),
        ("integrations", "0014_roles_read_change_log"),
    ]

    operations = [
        migrations.RunPython(clear_values_that_are_not_subscriber_ids, migrations.RunPython.noop, elidable=True),
    ]
