"""A resolver that outlives its claim's lease: a second resolver may see the event as claimable again, but
the first still holds its row for the transaction, so the second skips it and the work is done once."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from customers.models import CrossReference, Individual
from integrations.intake import AcceptedEvent, store_events
from integrations.marketing_cloud.mapping import subscriber_to_cim
from integrations.models import SyncRun
from integrations.resolver import process_event
from tests.conftest import subscriber

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_claim_outliving_its_lease_is_not_resolved_twice(sandbox, monkeypatch, tmp_path, settings):
    settings.RESOLVER_LEASE = 1
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
    # The first run stops for 3 s inside its transaction, after matching: longer than its lease.
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
    time.sleep(1.2)  # the lease has ended: the event looks claimable again
    second = threading.Thread(target=run, args=("second",))
    second.start()
    second.join(30)
    assert results == {"second": "already processing"}  # skipped: the first still holds the row
    first.join(30)
    assert results["first"] == "write-back queued"
    assert Individual.objects.count() == 1 and CrossReference.objects.count() == 1
    assert SyncRun.objects.count() == 1
