"""Two events for one person processed at the same moment never mint two golden records."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from customers.models import CrossReference, Individual
from integrations.intake import AcceptedEvent, store_events
from integrations.marketing_cloud.mapping import subscriber_to_cim
from integrations.resolver import process_event
from tests.conftest import subscriber

pytestmark = pytest.mark.django_db(transaction=True)


def _stored_event(args: dict[str, str], key: str) -> int:
    cim = subscriber_to_cim(args)
    [(event, _)] = store_events(
        [
            AcceptedEvent(
                channel="mc_journey",
                system="MARKETING_CLOUD",
                external_id=args["SubscriberKey"],
                idempotency_key=key,
                raw_body=b"{}",
                headers={},
                content_type="application/jwt",
                payload={},
                individual_cim=cim,
            )
        ]
    )
    return event.pk


def _run_together(event_ids: list[int]) -> list[str]:
    barrier = threading.Barrier(len(event_ids))
    results: list[str] = []
    errors: list[BaseException] = []

    def work(event_id: int) -> None:
        try:
            barrier.wait()
            results.append(process_event(event_id))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(eid,)) for eid in event_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


@pytest.mark.parametrize("round_", range(3))
def test_same_subscriber_twice_at_once_makes_one_golden_record(sandbox, round_):
    ids = [_stored_event(subscriber(ModifiedDate=f"2026-11-0{i + 1}T00:00:00Z"), f"k{i}") for i in range(2)]
    results = _run_together(ids)
    assert sorted(results) == ["write-back queued"] * 2 or "write-back queued" in results
    assert Individual.objects.count() == 1
    assert CrossReference.objects.count() == 1


@pytest.mark.parametrize("round_", range(3))
def test_two_subscriber_keys_with_one_email_at_once_make_one_golden_record(sandbox, round_):
    ids = [
        _stored_event(subscriber(key="SK-A", email="same.person@example.com"), "ka"),
        _stored_event(subscriber(key="SK-B", email="Same.Person@example.com"), "kb"),
        _stored_event(subscriber(key="SK-C", email="same.person@example.com "), "kc"),
    ]
    _run_together(ids)
    assert Individual.objects.count() == 1
    assert CrossReference.objects.count() == 3
