"""Accepted input is never lost, and a failure leaves nothing half-done."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from customers.models import Individual
from integrations.models import ApiClient, InboundEvent, QueuedFlag
from tests.conftest import subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_failing_wake_up_rolls_back_the_event_and_answers_5xx(journey, monkeypatch):
    import integrations.intake

    # The wake-up's queue row cannot be written (its key is longer than django-q2's column): the
    # one statement that stores the event fails as a whole.
    monkeypatch.setattr(integrations.intake, "broker_key", lambda: "k" * 500)
    response = journey.execute(subscriber())
    assert response.status_code == 500
    assert response.json()["title"] == "Internal error"
    assert InboundEvent.objects.count() == 0 and queued_tasks() == []
    monkeypatch.undo()
    # Journey Builder retries (retryCount); the retry is accepted as new.
    assert journey.execute(subscriber()).status_code == 200
    assert InboundEvent.objects.count() == 1 and len(queued_tasks()) == 1


def test_the_event_row_is_the_queue_entry_and_wake_ups_coalesce(journey):
    response = journey.execute(subscriber())
    event = InboundEvent.objects.get(pk=response.json()["eventId"])
    assert event.status == "queued" and event.visible_at <= timezone.now() and event.attempts == 0
    [task] = queued_tasks()
    assert task["func"] == "integrations.resolver.resolve_ready_events" and task["args"] == ()
    assert QueuedFlag.objects.get(name="resolver").queued
    # While that wake-up waits, more events queue no more tasks: one run will claim them all.
    for i in range(3):
        assert journey.execute(subscriber(key=f"SK-{i}", email=f"p{i}@example.com")).status_code == 200
    assert len(queued_tasks()) == 1
    run_queued()
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"synced"}
    assert not QueuedFlag.objects.get(name="resolver").queued


def test_a_later_event_without_the_master_id_writes_it_again(journey, sandbox):
    journey.execute(subscriber())
    run_queued()
    # Someone reloaded the data extension row in Marketing Cloud without the master ID.
    sandbox.reset()
    journey.execute(subscriber(FirstName="Ada", ModifiedDate="2026-11-03T00:00:00Z"))
    run_queued()
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == Individual.objects.get().master_id


@pytest.mark.django_db
def test_create_api_key_prints_the_key_as_its_last_line():
    out = io.StringIO()
    call_command("create_api_key", "pos", "--scope", "ingest", "--source", "POS", stdout=out, stderr=io.StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    client = ApiClient.objects.get(name="pos")
    assert key.startswith(f"hub_{client.key_prefix}_") and client.scopes == ["ingest"] and client.sources == ["POS"]
    assert client.key_hash == ApiClient.hash_key(key)
