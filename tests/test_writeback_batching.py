"""Write-back at volume: rowset batches of at most 50, coalescing, shared pause, circuit breaker."""

from __future__ import annotations

import pytest

from customers.models import CrossReference, Individual
from integrations.choices import MARKETING_CLOUD, EventStatus, RunStatus
from integrations.intake import AcceptedEvent, store_events
from integrations.marketing_cloud.client import breaker
from integrations.marketing_cloud.mapping import subscriber_to_cim
from integrations.models import ConnectorState, InboundEvent, SyncRun
from tests.conftest import subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db  # rolled back; the tests that need commits say so

FLUSH = "integrations.marketing_cloud.writeback.flush_writebacks"
PROCESS = "integrations.resolver.resolve_ready_events"


def store(n: int, *, start: int = 0, **extra: str) -> None:
    for i in range(start, start + n):
        args = subscriber(key=f"SK-{i:04d}", email=f"p{i}@example.com", **extra)
        store_events(
            [
                AcceptedEvent(
                    channel="mc_journey",
                    system=MARKETING_CLOUD,
                    external_id=args["SubscriberKey"],
                    idempotency_key=f"k-{i}-{args['ModifiedDate']}",
                    raw_body=b"{}",
                    headers={},
                    content_type="application/jwt",
                    payload={},
                    individual_cim=subscriber_to_cim(args),
                )
            ]
        )


def process_only() -> None:
    """Run the queued resolver tasks until none is left, leaving the write-back flushes queued.

    Until none is left: a resolver task that spends its time budget (RESOLVER_TASK_SECONDS, as on
    a loaded CI machine) queues itself again for the rest, and that one must run here too, else the
    rest is resolved after the first flush and the flushes the tests count split in two (seen).
    """
    from integrations.resolver import resolve_ready_events

    for _ in range(50):
        tasks = [task for task in queued_tasks() if task["func"] == PROCESS]
        if not tasks:
            return
        for task in tasks:
            task["row"].delete()
            resolve_ready_events(*task["args"])
    raise AssertionError("resolver tasks still queued after 50 rounds")


def test_piled_up_write_backs_go_out_in_rowsets_of_at_most_50(sandbox):
    store(120)
    process_only()
    run_queued()
    assert sandbox.count("POST", "/hub/v1/dataevents/key:Individual/rowset") == 3
    assert sandbox.count("PUT", "/hub/v1/dataevents") == 0
    assert sandbox.count("POST", "/v2/token") == 1
    rows = sandbox.rows("Individual")
    assert len(rows) == 120
    for xref in CrossReference.objects.select_related("individual"):
        assert rows[xref.external_id]["GlobalPartyId"] == xref.individual.master_id
        assert xref.writeback_state == "written" and xref.written_at
    assert set(SyncRun.objects.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {EventStatus.SYNCED}
    step = (
        SyncRun.objects.order_by("id").first().steps.get(name="write back master ID", outcome="ok", data__batchSize=50)
    )
    assert "rowset of 50" in step.detail


def test_several_updates_for_one_subscriber_coalesce_into_one_row(sandbox):
    for day in range(1, 5):
        store(1, ModifiedDate=f"2026-11-0{day}T00:00:00Z")
    process_only()
    run_queued()
    assert sandbox.count("PUT", "/hub/v1/dataevents") + sandbox.count("POST", "/hub/v1/dataevents") == 1
    assert SyncRun.objects.filter(status=RunStatus.SUCCEEDED).count() == 4


def test_a_bad_row_in_a_batch_fails_alone(sandbox):
    store(5)
    process_only()
    sandbox.inject("400", path_contains="/rowset")  # the batch is refused ...
    sandbox.inject("400", path_contains="SubscriberKey:SK-0002")  # ... because of this row
    run_queued()
    states = dict(CrossReference.objects.values_list("external_id", "writeback_state"))
    assert states.pop("SK-0002") == "failed"
    assert set(states.values()) == {"written"}
    assert SyncRun.objects.filter(status=RunStatus.DEAD).count() == 1


def test_throttling_pauses_every_worker_until_retry_after(sandbox):
    store(2)
    process_only()
    sandbox.inject("429", retry_after=30)
    run_queued(include_delayed=False)  # the flush is throttled; the retry waits
    state = ConnectorState.objects.get(system=MARKETING_CLOUD)
    assert state.paused_until is not None and state.breaker_state == "closed"
    gate = breaker.check()
    assert not gate.allowed and gate.wait > 25 and gate.reason.startswith("paused")
    # A flush started by any other worker now defers instead of calling.
    from integrations.marketing_cloud.writeback import flush_writebacks

    calls = len(sandbox.requests_log())
    assert flush_writebacks().startswith("deferred")
    assert len(sandbox.requests_log()) == calls
    run_queued()  # after the pause
    assert set(CrossReference.objects.values_list("writeback_state", flat=True)) == {"written"}


def test_circuit_breaker_opens_after_consecutive_failures_then_probes_and_closes(sandbox, settings):
    settings.WRITEBACK_MAX_ATTEMPTS = 20
    store(3)
    process_only()
    seen_before = len(sandbox.requests_log())  # none is expected; the count below starts here either way
    sandbox.inject("503", count=breaker.threshold)
    flushes = []
    for _ in range(60):  # retries come due one after another until the breaker opens
        flushes += run_queued(limit=1)
        state = ConnectorState.objects.get(system=MARKETING_CLOUD)
        if state.breaker_state == "open":
            break
    assert state.breaker_state == "open" and state.consecutive_failures == breaker.threshold
    data_calls = [e for e in sandbox.requests_log()[seen_before:] if e["path"].startswith("/hub/v1/dataevents")]
    # Each failed call counts once, and none goes out once the breaker is open.
    assert len(data_calls) == breaker.threshold, (data_calls, flushes)
    assert {e["status"] for e in data_calls} == {503}
    from integrations.marketing_cloud.writeback import flush_writebacks

    calls = len(sandbox.requests_log())
    assert "circuit breaker open" in flush_writebacks()
    assert len(sandbox.requests_log()) == calls
    run_queued()  # cooldown passes; one probe row, then the rest
    state.refresh_from_db()
    assert state.breaker_state == "closed" and state.consecutive_failures == 0
    assert set(CrossReference.objects.values_list("writeback_state", flat=True)) == {"written"}


def test_a_failed_probe_reopens_the_breaker_for_longer(sandbox):
    for _ in range(breaker.threshold):
        breaker.record_failure("boom")
    state = ConnectorState.objects.get(system=MARKETING_CLOUD)
    first_cooldown = (state.open_until - state.opened_at).total_seconds()
    state.open_until = state.opened_at  # cooldown over
    state.save()
    assert breaker.check().probe
    assert not breaker.check().allowed  # one probe at a time
    breaker.record_failure("still down")
    state.refresh_from_db()
    assert state.breaker_state == "open"
    assert (state.open_until - state.opened_at).total_seconds() == 2 * first_cooldown


def test_health_shows_the_breaker(client, sandbox):
    for _ in range(breaker.threshold):
        breaker.record_failure("boom")
    body = client.get("/api/health").json()
    assert body["connectors"][0]["system"] == MARKETING_CLOUD
    assert body["connectors"][0]["breaker"] == "open"


@pytest.mark.django_db(transaction=True)  # live server: its thread sees committed rows only
def test_write_back_state_is_in_the_api(api, journey, sandbox):
    sandbox.inject("403")
    journey.execute(subscriber())
    run_queued()
    master_id = Individual.objects.get().master_id
    body = api.get(f"{api.base_url}/api/v1/individuals/{master_id}", timeout=10).json()
    writeback = body["externalIds"][0]["writeback"]
    assert writeback["state"] == "failed" and "Insufficient privileges" in writeback["error"]


def test_a_starved_flush_is_done_by_the_next_event_worker(sandbox, monkeypatch):
    import datetime as dt

    from django.utils import timezone

    import integrations.marketing_cloud.writeback as writeback
    from integrations.models import QueuedFlag
    from integrations.resolver import process_event

    # Starvation is made by moving the flag's clock back, never by waiting: with a few seconds'
    # limit, two events on a loaded CI machine took longer than it and flushed inline (seen).
    monkeypatch.setattr(writeback, "STARVED_AFTER", 600.0)
    store(3)
    ids = list(InboundEvent.objects.order_by("id").values_list("pk", flat=True))
    for event_id in ids[:2]:
        process_event(event_id)
    assert sandbox.count("POST", "/hub/v1/dataevents") == 0  # the flush is queued, behind the backlog
    # The queued flush has waited: the next worker to finish an event flushes itself.
    QueuedFlag.objects.filter(name="write-back-flush").update(updated_at=timezone.now() - dt.timedelta(seconds=700))
    process_event(ids[2])
    assert sandbox.count("POST", "/hub/v1/dataevents/key:Individual/rowset") == 1
    assert CrossReference.objects.filter(writeback_state="written").count() == 3


def test_an_inline_flush_leaves_the_queued_flush_and_its_flag_alone(sandbox, monkeypatch):
    import datetime as dt

    from django.utils import timezone

    import integrations.marketing_cloud.writeback as writeback
    from integrations.models import QueuedFlag
    from integrations.resolver import process_event

    monkeypatch.setattr(writeback, "STARVED_AFTER", 600.0)  # starved by the clock moved back, not by waiting
    store(4)
    ids = list(InboundEvent.objects.order_by("id").values_list("pk", flat=True))
    process_event(ids[0])
    QueuedFlag.objects.filter(name="write-back-flush").update(updated_at=timezone.now() - dt.timedelta(seconds=700))
    for event_id in ids[1:]:
        process_event(event_id)  # each relieves the starved flush inline
    flushes = [t for t in queued_tasks() if t["func"] == FLUSH]
    assert len(flushes) == 1  # still the one queued flush: no pile of copies
    assert QueuedFlag.objects.get(name="write-back-flush").queued
