"""The resolver: the event table as the queue, batches decided in order, concurrency, one bad event failing alone."""

from __future__ import annotations

import datetime as dt
import os
import random
import threading

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ

import customers.resolution.engine as engine_module
import customers.resolution.store as store_module
from customers.cim import parse_individual
from customers.models import CrossReference, Individual, MatchCandidate
from customers.resolution.engine import SUPERSEDED, SourceChange, resolve
from integrations.choices import EventStatus
from integrations.intake import AcceptedEvent, store_events
from integrations.models import DeadLetter, InboundEvent, QueuedFlag, SyncRun
from integrations.resolver import PROCESS_MAX_ATTEMPTS, claim, resolve_claimed, resolve_ready_events, sweep
from tests.queue import run_queued

pytestmark = pytest.mark.django_db  # rolled back; the tests that need commits say so


def person(first: str, last: str, email: str, phone: str = "", birth: str = "", **extra: object) -> dict:
    points = [{"contactPointType": "ContactPointEmail", "emailAddress": email}]
    if phone:
        points.append({"contactPointType": "ContactPointPhone", "telephoneNumber": phone})
    data = {"firstName": first, "lastName": last, "contactPoints": points}
    if birth:
        data["birthDate"] = birth
    return data | extra


def store(system: str, record_id: str, individual: dict, occurred_at: str | None = None, key: str = "") -> int:
    [(event, _)] = store_events(
        [
            AcceptedEvent(
                channel="api",
                system=system,
                external_id=record_id,
                idempotency_key=key or f"{system}:{record_id}:{occurred_at}:{random.random()}",
                raw_body=b"{}",
                headers={},
                content_type="application/json",
                payload={},
                individual_cim={"id": record_id, **individual},
                occurred_at=dt.datetime.fromisoformat(occurred_at) if occurred_at else None,
            )
        ]
    )
    return event.pk


def owner(system: str, record_id: str) -> int:
    return CrossReference.objects.get(system=system, external_id=record_id).individual_id


def test_two_new_records_of_one_person_in_one_batch_become_one_golden_record():
    store("POS", "p-1", person("Robert", "Smith", "rob@example.com", "+1 415 555 0100"))
    store("B2C_COMMERCE", "c-1", person("Bob", "Smith", "bob@example.net", "(415) 555-0100"))
    claimed = claim(10)
    assert len(claimed) == 2  # one batch
    assert resolve_claimed(claimed) == {"synced": 2}
    assert Individual.objects.count() == 1 and owner("POS", "p-1") == owner("B2C_COMMERCE", "c-1")
    second = SyncRun.objects.get(external_id="c-1")
    assert second.match_rule == "Same phone, same name"
    assert [s.name for s in second.steps.all()] == [
        "find golden record",
        "upsert golden record",
        "upsert cross reference",
        "notify downstream systems",
        "write back master ID",
    ]


@pytest.mark.django_db(transaction=True)  # claims compare with the database's now()
def test_a_source_records_events_are_claimed_one_at_a_time_in_the_order_received():
    first = store("POS", "p-1", person("Ann", "Lee", "ann@example.com"), "2026-11-01T00:00:00+00:00")
    second = store("POS", "p-1", person("Annie", "Lee", "ann@example.com"), "2026-11-03T00:00:00+00:00")
    older = store("POS", "p-1", person("Anna", "Lee", "ann@example.com"), "2026-11-02T00:00:00+00:00")
    other = store("POS", "p-2", person("Tom", "Ray", "tom@example.com"))
    # Only the oldest pending event of a source record can be claimed: the others wait their turn.
    assert [c.pk for c in claim(10)] == [first, other]
    # Give the claims back, as if their lease had ended.
    InboundEvent.objects.filter(pk__in=[first, other]).update(status="queued", visible_at=timezone.now(), attempts=0)
    resolve_ready_events()
    statuses = dict(InboundEvent.objects.values_list("pk", "status"))
    assert statuses == {first: "synced", second: "synced", older: "superseded", other: "synced"}
    assert Individual.objects.get(pk=owner("POS", "p-1")).first_name == "Annie"
    runs = list(SyncRun.objects.filter(external_id="p-1").order_by("id").values_list("event_id", flat=True))
    assert runs == [first, second, older]


def test_an_older_change_later_in_the_same_batch_is_superseded():
    rows = [
        SourceChange("POS", "p-1", parse_individual(person("Ann", "Lee", "a@example.com")), _at("2026-11-05")),
        SourceChange("POS", "p-1", parse_individual(person("Anna", "Lee", "a@example.com")), _at("2026-11-01")),
    ]
    with transaction.atomic():
        results = resolve(rows)
    assert [r.status for r in results] == ["applied", SUPERSEDED]
    assert Individual.objects.get().first_name == "Ann"


def _at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T00:00:00+00:00")


@pytest.mark.django_db(transaction=True)  # claims compare with the database's now()
def test_one_bad_event_fails_alone_and_is_retried_then_the_rest_commits(monkeypatch):
    ids = [store("POS", f"p-{i}", person(f"P{i}", "Okafor", f"p{i}@example.com")) for i in range(5)]
    broken = store("POS", "bad", {"contactPoints": "not a list"})  # bad data: dead at once
    real_apply = engine_module._apply

    def apply(work, change, systems):
        if change.external_id == "p-2" and not getattr(apply, "done", False):
            raise RuntimeError("transient trouble with this one record")
        return real_apply(work, change, systems)

    monkeypatch.setattr(engine_module, "_apply", apply)
    resolve_ready_events()
    statuses = dict(InboundEvent.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["synced", "synced", "retrying", "synced", "synced"]
    assert statuses[broken] == "dead" and DeadLetter.objects.get().event_id == broken
    retrying = InboundEvent.objects.get(pk=ids[2])
    assert retrying.visible_at > timezone.now() and "transient trouble" in retrying.reason
    assert Individual.objects.count() == 4
    apply.done = True
    run_queued()  # the timed wake-up, after the backoff
    assert InboundEvent.objects.get(pk=ids[2]).status == "synced" and Individual.objects.count() == 5


def test_a_batch_whose_writing_fails_is_applied_one_by_one(monkeypatch):
    ids = [store("POS", f"p-{i}", person(f"P{i}", "Nwosu", f"n{i}@example.com")) for i in range(4)]
    real_write = store_module.write_history

    def write_history(rows):
        if any(r.after and r.after.get("external_id") == "p-1" for r in rows):
            raise DataError("value rejected by the database")
        return real_write(rows)

    monkeypatch.setattr(store_module, "write_history", write_history)
    resolve_ready_events()
    statuses = [InboundEvent.objects.get(pk=pk).status for pk in ids]
    assert statuses == ["synced", "retrying", "synced", "synced"]
    assert not CrossReference.objects.filter(external_id="p-1").exists()  # nothing half-written
    assert CrossReference.objects.count() == 3


@pytest.mark.django_db(transaction=True)  # claims compare with the database's now()
def test_a_claim_whose_worker_died_is_retried_alone_and_dead_lettered_when_it_keeps_dying():
    healthy = store("POS", "p-1", person("Ada", "Byron", "ada@example.com"))
    crashed = store("POS", "p-2", person("Alan", "Turing", "alan@example.com"))
    killer = store("POS", "p-3", person("Kurt", "Godel", "kurt@example.com"))
    past = timezone.now() - dt.timedelta(seconds=1)
    # As a worker leaves them when it dies mid-batch: claimed (processing), the lease over.
    InboundEvent.objects.filter(pk=crashed).update(status="processing", attempts=1, visible_at=past, claimed_by="x")
    InboundEvent.objects.filter(pk=killer).update(
        status="processing", attempts=PROCESS_MAX_ATTEMPTS, visible_at=past, claimed_by="x"
    )
    resolve_ready_events()
    statuses = dict(InboundEvent.objects.values_list("pk", "status"))
    assert statuses == {healthy: "synced", crashed: "synced", killer: "dead"}
    assert "worker died" in DeadLetter.objects.get(event_id=killer).reason


@pytest.mark.django_db(transaction=True)  # claims compare with the database's now()
def test_a_worker_dying_on_one_crashed_claim_does_not_count_against_the_others():
    events = [store("POS", f"p-{i}", person(name, "Lovelace", f"{name}@example.com")) for i, name in enumerate("abc")]
    past = timezone.now() - dt.timedelta(seconds=1)
    # Three events of a batch whose worker died: each is to be resolved alone.
    InboundEvent.objects.filter(pk__in=events).update(status="processing", attempts=1, visible_at=past, claimed_by="x")
    first = claim(10)
    assert [c.pk for c in first] == [events[0]] and first[0].crashed and first[0].attempts == 2
    # The others are back as they were: crashed, ready, their attempts not counting this claim.
    rest = InboundEvent.objects.filter(pk__in=events[1:])
    assert set(rest.values_list("status", "attempts", "claimed_by")) == {("processing", 1, "")}
    assert all(at <= timezone.now() for at in rest.values_list("visible_at", flat=True))
    # This worker dies on the first one; the next claims take one crashed event each.
    InboundEvent.objects.filter(pk=events[0]).update(visible_at=past)
    assert [c.pk for c in claim(10)] == [events[0]]
    assert InboundEvent.objects.get(pk=events[0]).attempts == 3
    assert [(c.pk, c.attempts) for c in claim(10)] == [(events[1], 2)]


@pytest.mark.django_db(transaction=True)  # four threads, four connections
def test_several_resolvers_at_once_never_mint_two_golden_records_for_one_person(settings):
    settings.RESOLVER_BATCH = 7
    rng = random.Random(7)
    # Three systems' records of each person; any two of them match by the rules (same phone, names
    # agree), so in whatever order and with whatever concurrency they arrive, they are one person.
    events = []
    for p in range(60):
        phone = f"+1 212 555 {p:04d}"
        events.append(("POS", f"pos-{p}", person("William", f"Brown{p}", f"wb{p}@a.example", phone)))
        events.append(("B2C_COMMERCE", f"web-{p}", person("Bill", f"Brown{p}", f"bill{p}@b.example", phone)))
        events.append(("SALESFORCE", f"crm-{p}", person("Will", f"Brown{p}", f"wb{p}@a.example", phone)))
    rng.shuffle(events)
    for system, record_id, data in events:
        store(system, record_id, data)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    said: list[str] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(20):
                said.append(resolve_ready_events(7))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    worked = [x for x in said if x != "nothing ready"]
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"synced"}, worked  # no deadlock, no retry
    assert Individual.objects.filter(merged_into__isnull=True).count() == 60
    for p in range(60):
        assert owner("POS", f"pos-{p}") == owner("B2C_COMMERCE", f"web-{p}") == owner("SALESFORCE", f"crm-{p}")
    assert not MatchCandidate.objects.exists()


def test_statements_per_batch_do_not_grow_with_its_size():
    def statements(count: int, prefix: str) -> int:
        for i in range(count):
            store(
                "POS", f"{prefix}-{i}", person("Grace", f"{prefix}{i}", f"{prefix}{i}@example.com", birth="1980-01-01")
            )
        with CaptureQueriesContext(connection) as queries:
            resolve_ready_events(count)
        assert InboundEvent.objects.filter(external_id__startswith=prefix, status="synced").count() == count
        return len(queries)

    small, large = statements(5, "small"), statements(60, "large")
    assert large <= small + 5, (small, large)  # set-based: one batch of 60 costs what one of 5 does


def test_the_sweep_wakes_the_resolver_when_a_wake_up_was_lost():
    store("POS", "p-1", person("Ada", "Byron", "ada@example.com"))
    OrmQ.objects.all().delete()  # the wake-up died with its worker; the flag still says "queued"
    assert QueuedFlag.objects.get(name="resolver").queued
    assert sweep() == "resolver woken"
    run_queued()
    assert InboundEvent.objects.get().status == EventStatus.SYNCED
    assert sweep() == "nothing ready"


def test_a_claim_names_the_host_and_process_holding_it(settings):
    settings.INSTANCE_NAME = "worker-7"
    event = store("POS", "p-9", person("Ida", "Host", "ida@example.com"))
    [claimed] = claim(10)
    host, pid, claim_id = InboundEvent.objects.get(pk=event).claimed_by.split(":")
    assert (host, int(pid)) == ("worker-7", os.getpid()) and claimed.token.endswith(claim_id)
