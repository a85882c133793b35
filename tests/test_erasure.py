"""GDPR erasure: a person forgotten everywhere the hub keeps them, Marketing Cloud told, the erasure recorded."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from customers.models import ChangeEvent, ContactPoint, CrossReference, HistoryEntry, Individual
from integrations.models import ApiClient, InboundEvent
from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)

PERSONAL = ["ada.lovelace@example.com", "Lovelace", "SW1Y 4JH", "7946 0018", "1985-12-10"]


def dump_tables() -> str:
    """Everything the hub stores, as text, to look for personal data in."""
    chunks = []
    with connection.cursor() as cursor:
        for table in [
            "customers_individual",
            "customers_contactpoint",
            "customers_crossreference",
            "customers_historyentry",
            "customers_changeevent",
            "integrations_inboundevent",
            "integrations_deadletter",
            "integrations_syncstep",
            "integrations_syncrun",
        ]:
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
            for row in cursor.fetchall():
                chunks.append(
                    " ".join(
                        bytes(v).decode(errors="replace") if isinstance(v, memoryview) else json.dumps(v, default=str)
                        for v in row
                    )
                )
    return "\n".join(chunks)


@pytest.fixture
def eraser(live_server):
    import requests

    _, key = ApiClient.issue("privacy-desk", ["erase", "read"])
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    session.base_url = live_server.url
    return session


def test_erasure_through_the_api(journey, sandbox, eraser):
    journey.execute(subscriber())
    run_queued()
    individual = Individual.objects.get()
    assert any(value in dump_tables() for value in PERSONAL)
    response = eraser.post(f"{eraser.base_url}/api/v1/individuals/{individual.master_id}/erasure", timeout=10)
    assert response.status_code == 202 and response.json()["sourceRecords"] == 1
    run_queued()
    text = dump_tables()
    for value in PERSONAL + ["Ada"]:
        assert value not in text, value
    individual.refresh_from_db()
    assert individual.erased_at and individual.first_name == "" and not ContactPoint.objects.exists()
    assert CrossReference.objects.get().status == "INVALID"
    assert HistoryEntry.objects.filter(action="erase", individual=individual).exists()
    assert ChangeEvent.objects.filter(change_type="erased").exists()
    # Marketing Cloud was told: the subscriber's row no longer holds the master ID.
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == ""
    # A second erasure changes nothing.
    assert (
        eraser.post(f"{eraser.base_url}/api/v1/individuals/{individual.master_id}/erasure", timeout=10).json()[
            "sourceRecords"
        ]
        == 0
    )


def test_erasure_needs_the_erase_scope(api, journey, sandbox):
    journey.execute(subscriber())
    run_queued()
    master_id = Individual.objects.get().master_id
    assert api.post(f"{api.base_url}/api/v1/individuals/{master_id}/erasure", timeout=10).status_code == 403
    assert Individual.objects.get().erased_at is None


def test_a_returning_subscriber_gets_a_new_golden_record(journey, sandbox):
    from django.db import transaction

    from customers.stewardship import erase_individual

    journey.execute(subscriber())
    run_queued()
    old = Individual.objects.get()
    with transaction.atomic():
        erase_individual(old, actor="test")
    run_queued()
    journey.execute(subscriber(ModifiedDate="2026-12-01T00:00:00Z"))
    run_queued()
    new = Individual.objects.exclude(pk=old.pk).get()
    assert new.first_name == "Ada" and new.master_id != old.master_id
    xref = CrossReference.objects.get()
    assert xref.individual_id == new.pk and xref.status == "VALID"
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == new.master_id
    old.refresh_from_db()
    assert old.erased_at and old.first_name == ""
    assert InboundEvent.objects.filter(individual_cim__isnull=True).count() == 1  # the erased person's event


def test_erasure_from_the_admin_needs_its_permission(journey, sandbox, client, admin_client):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    journey.execute(subscriber())
    run_queued()
    individual = Individual.objects.get()
    user = get_user_model().objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_individual", "change_individual"]))
    client.force_login(user)
    client.post("/admin/customers/individual/", {"action": "erase", "_selected_action": [individual.pk]})
    assert Individual.objects.get().erased_at is None  # not offered without the erase permission
    admin_client.post("/admin/customers/individual/", {"action": "erase", "_selected_action": [individual.pk]})
    assert Individual.objects.get().erased_at is not None
