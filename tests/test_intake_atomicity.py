"""Accepted input is never lost, and a failure leaves nothing half-done."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from customers.models import Individual
from integrations.intake import AcceptedEvent, store_events
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


def _accepted(i: int, *, key: str | None = None, api_client: ApiClient | None = None) -> AcceptedEvent:
    return AcceptedEvent(
        channel="api",
        system="SALESFORCE",
        external_id=f"003-{i}\x00",  # NUL, which text cannot hold, kept as U+FFFD in either form
        idempotency_key=key or f"store-form:{i}",
        raw_body=b"\x00raw " + bytes([i]),
        headers={"CONTENT_TYPE": "application/json", "HTTP_USER_AGENT": "t\ud800"},
        content_type="application/json",
        payload={"i": i, "name": "Zoë 🎉"},
        individual_cim={"id": f"003-{i}", "firstName": "Ada"},
        occurred_at=dt.datetime(2026, 11, 1, 12, i, tzinfo=dt.UTC),
        api_client=api_client,
    )


_STORED = ("channel", "system", "external_id", "status", "reason", "occurred_at", "content_type", "headers")
_STORED += ("raw_body", "payload", "individual_cim", "api_client_id", "master_id", "attempts", "claimed_by")


def _row(pk: int) -> dict:
    row = InboundEvent.objects.filter(pk=pk).values(*_STORED).get()
    return {**row, "raw_body": bytes(row["raw_body"])}


def _stores(captured: CaptureQueriesContext) -> list[str]:
    statements = [q["sql"] for q in captured.captured_queries if "INSERT INTO integrations_inboundevent" in q["sql"]]
    return ["arrays" if "unnest(" in sql else "scalars" for sql in statements]


def test_one_event_and_a_batch_store_the_same_rows_and_wake_the_resolver_once():
    client = ApiClient.objects.create(name="crm", key_prefix="k1", key_hash="h", sources=["SALESFORCE"])
    with CaptureQueriesContext(connection) as one:
        [(single, duplicate)] = store_events([_accepted(1, api_client=client)])
    # One event travels as scalars (the intake's usual call), a batch as arrays: one statement each.
    assert not duplicate and _stores(one) == ["scalars"]
    with CaptureQueriesContext(connection) as batch:
        stored = store_events([_accepted(2, api_client=client), _accepted(3), _accepted(2, api_client=client)])
    assert _stores(batch) == ["arrays"]
    assert [d for _, d in stored] == [False, False, True] and stored[0][0] == stored[2][0]
    first, second = _row(single.pk), _row(stored[0][0].pk)
    assert first == {**second, "external_id": "003-1\ufffd", "raw_body": b"\x00raw \x01"} | {
        "payload": {"i": 1, "name": "Zoë 🎉"},
        "individual_cim": {"id": "003-1", "firstName": "Ada"},
        "occurred_at": dt.datetime(2026, 11, 1, 12, 1, tzinfo=dt.UTC),
    }
    assert first["headers"]["HTTP_USER_AGENT"] == "t\ufffd" and first["api_client_id"] == client.pk
    assert _row(stored[1][0].pk)["api_client_id"] is None and first["status"] == "queued"
    # The first store woke the resolver; the batch found it asked already.
    assert len(queued_tasks()) == 1
    # A repeated key answers with the first copy, in either form.
    [(again, duplicate)] = store_events([_accepted(9, key="store-form:1")])
    assert duplicate and again == single and InboundEvent.objects.count() == 3
    run_queued()
    assert not QueuedFlag.objects.get(name="resolver").queued
    store_events([_accepted(4)])
    assert len(queued_tasks()) == 1  # idle again: the next single event wakes it
