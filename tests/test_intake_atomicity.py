"""Accepted input is never lost, and a failure leaves nothing half-done."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from customers.models import Individual
from integrations.models import ApiClient, InboundEvent
from tests.conftest import subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db(transaction=True)


def test_failed_enqueue_rolls_back_the_event_and_answers_5xx(journey, monkeypatch):
    import integrations.intake

    def broken_enqueue(*args, **kwargs):
        raise RuntimeError("queue unavailable")

    monkeypatch.setattr(integrations.intake, "enqueue", broken_enqueue)
    response = journey.execute(subscriber())
    assert response.status_code == 500
    assert response.json()["title"] == "Internal error"
    assert InboundEvent.objects.count() == 0
    monkeypatch.undo()
    # Journey Builder retries (retryCount); the retry is accepted as new.
    assert journey.execute(subscriber()).status_code == 200
    assert InboundEvent.objects.count() == 1 and len(queued_tasks()) == 1


def test_event_row_and_queue_row_commit_together(journey):
    response = journey.execute(subscriber())
    event = InboundEvent.objects.get(pk=response.json()["eventId"])
    [task] = queued_tasks()
    assert task["func"] == "integrations.process.process_event" and task["args"] == (event.pk,)


def test_a_later_event_without_the_master_id_writes_it_again(journey, sandbox):
    journey.execute(subscriber())
    run_queued()
    # Someone reloaded the data extension row in Marketing Cloud without the master ID.
    sandbox.reset()
    journey.execute(subscriber(FirstName="Ada", ModifiedDate="2026-11-03T00:00:00Z"))
    run_queued()
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == Individual.objects.get().master_id


def test_create_api_key_prints_the_key_as_its_last_line():
    out = io.StringIO()
    call_command("create_api_key", "pos", "--scope", "ingest", stdout=out, stderr=io.StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    client = ApiClient.objects.get(name="pos")
    assert key.startswith(f"hub_{client.key_prefix}_") and client.scopes == ["ingest"]
    assert client.key_hash == ApiClient.hash_key(key)


def test_mc_sandbox_command_plays_journey_builder(journey, settings):
    out = io.StringIO()
    call_command("mc_sandbox", "--send-demo", journey.url, "--count", "2", stdout=out)
    assert InboundEvent.objects.count() == 2
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 2 and all(" 200 " in line for line in lines)
