"""A task that outlives django-q2's lease is handed to a second worker while the first still runs:
the second waits on the event's row lock, then finds the work done and does nothing harmful."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from customers.models import CrossReference, Individual
from integrations.intake import AcceptedEvent, store_events
from integrations.marketing_cloud.mapping import subscriber_to_cim
from integrations.models import SyncRun
from integrations.process import process_event
from tests.conftest import subscriber

pytestmark = pytest.mark.django_db(transaction=True)


def test_second_run_of_a_slow_task_waits_then_does_nothing(sandbox, monkeypatch, tmp_path):
    args = subscriber()
    [(event, _)] = store_events(
        [
            AcceptedEvent(
                channel="mc_journey",
                system="MARKETING_CLOUD",
                external_id="SK-1001",
                idempotency_key="k1",
                raw_body=b"{}",
                headers={},
                content_type="application/jwt",
                payload={},
                individual_cim=subscriber_to_cim(args),
            )
        ]
    )
    marker = tmp_path / "fault.pid"
    # The first run stops for 3 s inside its transaction, after matching: longer than "the lease".
    monkeypatch.setenv("HUB_FAULT_POINT", "after-match:3")
    monkeypatch.setenv("HUB_FAULT_MARKER", str(marker))
    results: dict[str, str] = {}

    def run(name: str) -> None:
        try:
            results[name] = process_event(event.pk)
        finally:
            connection.close()

    first = threading.Thread(target=run, args=("first",))
    first.start()
    while not marker.exists():
        time.sleep(0.05)
    started = time.monotonic()
    second = threading.Thread(target=run, args=("second",))  # the redelivered copy
    second.start()
    first.join(30)
    second.join(30)
    assert time.monotonic() - started >= 2.5  # the second waited for the first to commit
    assert results == {"first": "write-back queued", "second": "already writeback"}
    assert Individual.objects.count() == 1 and CrossReference.objects.count() == 1
    assert SyncRun.objects.count() == 1
