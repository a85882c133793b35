"""Writing master IDs back to Marketing Cloud, batched.

Pending cross references are the queue (``writeback_state = pending`` with a due
time): several changes for one subscriber coalesce into that one row, and a flush
claims up to 50 due rows (``SKIP LOCKED``, so concurrent flushes never share one)
and sends them in one call: a single row as ``PUT .../rows/{pk}:{value}``, more as
``POST .../rowset`` (Marketing Cloud's advice: at most 50 rows per call).

Before calling, the flush asks Marketing Cloud's shared breaker (``client.breaker``, an
``integrations.transport.CircuitBreaker``): a 429 pauses every worker until Retry-After
has passed, and an open circuit breaker holds all calls until a single probe succeeds.
Nothing ever sleeps in a worker: a deferred flush is a queue row that becomes visible later.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from customers.choices import WritebackState
from customers.models import CrossReference
from customers.writeback_state import Written, record_deferred, record_failed, record_written
from hub.sql import update_rows
from integrations.choices import MARKETING_CLOUD, EventStatus, RunStatus, StepOutcome
from integrations.faults import fault_point
from integrations.marketing_cloud.client import MarketingCloudClient, breaker
from integrations.models import DeadLetter, InboundEvent, QueuedFlag, SyncRun, SyncStep
from integrations.queue import enqueue_once, enqueue_wake_up, task_started, wake_up_started
from integrations.runs import event_snapshot
from integrations.transport import TransportError, backoff_delay

logger = logging.getLogger(__name__)

FLUSH_TASK = "integrations.marketing_cloud.writeback.flush_writebacks"
BATCH_SIZE = 50
STEP = "write back master ID"


FLUSH_FLAG = "write-back-flush"
FLUSH_WAKE_UP = "write-back-flush-later"


def queue_flush(*, delay: float = 0.0) -> None:
    """Ask for a flush: now (coalesced with any flush already waiting), or a timed wake-up."""
    if delay > 0:
        enqueue_wake_up(FLUSH_TASK, flag=FLUSH_WAKE_UP, delay=delay)
    else:
        enqueue_once(FLUSH_TASK, flag=FLUSH_FLAG)


STARVED_AFTER = 3.0


def flush_if_starved(client: Any = None) -> str | None:
    """Run a flush here when the queued one has waited too long.

    django-q2's ORM broker hands out ready tasks in no particular order, so behind a
    backlog of thousands of events the one queued flush can wait minutes while the
    Marketing Cloud write-backs pile up. A worker that just finished an event does a
    flush itself then (flushes claim rows with SKIP LOCKED, so several can run).
    """
    starved = QueuedFlag.objects.filter(
        name=FLUSH_FLAG, queued=True, updated_at__lt=timezone.now() - dt.timedelta(seconds=STARVED_AFTER)
    ).exists()
    # Inline: the queued flush (and any wake-up) stays queued, so its flags stay set.
    return flush_writebacks(client, from_queue=False) if starved else None


@dataclass
class RowResult:
    xref: CrossReference
    master_id: str
    error: TransportError | None = None


def _send(client: Any, xrefs: list[CrossReference]) -> tuple[list[RowResult], int]:
    """Call Marketing Cloud for the claimed rows; returns per-row results and calls made."""
    de_key, pk_name, field = settings.MC_DE_KEY, settings.MC_DE_PRIMARY_KEY, settings.MC_MASTER_ID_FIELD
    # An erased person's subscriber keeps no master ID in Marketing Cloud: the write clears it.
    rows = [RowResult(x, "" if x.individual.erased_at else x.individual.master_id) for x in xrefs]
    if len(rows) == 1:
        return _send_one(client, rows[0], de_key, pk_name, field), 1
    try:
        client.upsert_rowset(
            de_key, [{"keys": {pk_name: r.xref.external_id}, "values": {field: r.master_id}} for r in rows]
        )
        return rows, 1
    except TransportError as exc:
        if not exc.permanent:
            for row in rows:
                row.error = exc
            return rows, 1
    # One row made the whole batch unacceptable: send each alone so only it fails.
    calls = 1
    for row in rows:
        _send_one(client, row, de_key, pk_name, field)
        calls += 1
    return rows, calls


def _send_one(client: Any, row: RowResult, de_key: str, pk_name: str, field: str) -> list[RowResult]:
    try:
        client.upsert_row(de_key, pk_name, row.xref.external_id, {field: row.master_id})
    except TransportError as exc:
        row.error = exc
    return [row]


def flush_writebacks(client: Any = None, *, from_queue: bool = True) -> str:
    """django-q2 entry point: write one batch of due master IDs, then queue the next flush."""
    if from_queue:
        task_started(FLUSH_FLAG)
        wake_up_started(FLUSH_WAKE_UP)
    gate = breaker.check()
    if not gate.allowed:
        if _pending().exists():
            queue_flush(delay=gate.wait + random.uniform(0, 1))
        return f"deferred: {gate.reason}"
    limit = 1 if gate.probe else BATCH_SIZE
    with transaction.atomic():
        xrefs = list(
            _pending()
            .filter(writeback_due_at__lte=timezone.now())
            .select_related("individual")
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("writeback_due_at", "id")[:limit]
        )
        if not xrefs:
            _queue_next_flush()
            return "nothing due"
        started = timezone.now()
        try:
            client = client or MarketingCloudClient.from_settings()
            fault_point("before-mc-call")
            results, calls = _send(client, xrefs)
            fault_point("after-mc-call")
        except TransportError as exc:  # not configured, or no token: every row shares the fate
            results, calls = (
                [RowResult(x, "" if x.individual.erased_at else x.individual.master_id, exc) for x in xrefs],
                0,
            )
        _apply(results, started=started, batch_size=len(xrefs))
    _record_connector_health(results)
    _queue_next_flush()
    failed = sum(1 for r in results if r.error)
    return f"{len(results) - failed} written, {failed} failed, {calls} call(s)"


def _pending() -> Any:
    return CrossReference.objects.filter(system=MARKETING_CLOUD, writeback_state=WritebackState.PENDING)


def _queue_next_flush() -> None:
    next_due = _pending().order_by("writeback_due_at").values_list("writeback_due_at", flat=True).first()
    if next_due is None:
        return
    with transaction.atomic():  # a flush due now is coalesced: its flag and its queue row commit together
        queue_flush(delay=max(0.0, (next_due - timezone.now()).total_seconds()))


def _record_connector_health(results: list[RowResult]) -> None:
    errors = [r.error for r in results if r.error]
    transient = [e for e in errors if not e.permanent]
    if not transient:
        breaker.record_success()
        return
    first = transient[0]
    throttled = first.http_status == 429
    breaker.record_failure(
        first.message,
        trips_breaker=not throttled,
        pause_for=first.retry_after if throttled else None,
    )


def _waiting_runs(xrefs: list[CrossReference]) -> dict[str, list[SyncRun]]:
    runs: dict[str, list[SyncRun]] = defaultdict(list)
    queryset = SyncRun.objects.select_for_update().filter(
        system=MARKETING_CLOUD,
        external_id__in=[x.external_id for x in xrefs],
        status__in=[RunStatus.WAITING, RunStatus.RUNNING],
    )
    for run in queryset.order_by("id"):
        runs[run.external_id].append(run)
    return runs


# One new step per run, numbered after the run's last one.
_APPEND_STEPS = f"""
INSERT INTO {SyncStep._meta.db_table} (run_id, seq, name, started_at, finished_at, outcome, detail, data)
SELECT v.run_id, coalesce((SELECT max(s.seq) FROM {SyncStep._meta.db_table} s WHERE s.run_id = v.run_id), 0) + 1,
       %s, %s, %s, v.outcome, v.detail, v.data::jsonb
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS v(run_id, outcome, detail, data)
"""


def _append_steps(steps: list[tuple[int, str, str, dict[str, Any]]], started: dt.datetime) -> None:
    if not steps:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _APPEND_STEPS,
            [
                STEP,
                started,
                max(started, timezone.now()),
                [run_id for run_id, *_ in steps],
                [outcome for _, outcome, _, _ in steps],
                [detail for _, _, detail, _ in steps],
                [json.dumps(data) for *_, data in steps],
            ],
        )


def _apply(results: list[RowResult], *, started: dt.datetime, batch_size: int) -> None:
    """Record every row's outcome set-based: cross references, their runs, steps, events, history."""
    now = timezone.now()
    runs_by_key = _waiting_runs([r.xref for r in results])
    max_attempts = settings.WRITEBACK_MAX_ATTEMPTS
    how = "PUT row" if batch_size == 1 else f"POST rowset of {batch_size}"
    written: list[Written] = []
    failed: list[tuple[int, str]] = []
    deferred: list[tuple[int, dt.datetime, str]] = []
    steps: list[tuple[int, str, str, dict[str, Any]]] = []
    finished_runs: list[tuple[Any, ...]] = []  # id, status, finished_at, next_attempt_at, master_id, last_error
    events: list[tuple[Any, ...]] = []  # id, status, processed_at, master_id, reason
    dead: list[tuple[SyncRun, str, TransportError]] = []
    for result in results:
        xref, runs = result.xref, runs_by_key.get(result.xref.external_id, [])
        attempt = xref.writeback_attempts + 1
        error = result.error
        if error is None:
            written.append(
                Written(
                    xref.pk,
                    xref.individual_id,
                    result.master_id,
                    xref.individual.master_id,
                    xref.system,
                    xref.external_id,
                    f"sync-run:{runs[-1].pk}" if runs else "write-back",
                )
            )
            detail = f"{how}: {settings.MC_MASTER_ID_FIELD} written (attempt {attempt})"
            data = {"attempt": attempt, "masterId": result.master_id, "batchSize": batch_size}
            for run in runs:
                steps.append((run.pk, StepOutcome.OK, detail, data))
                finished_runs.append((run.pk, RunStatus.SUCCEEDED, now, None, result.master_id, run.last_error))
                if run.event_id:
                    events.append((run.event_id, EventStatus.SYNCED, now, result.master_id, ""))
            continue
        data = {
            "attempt": attempt,
            "httpStatus": error.http_status,
            "errorCode": error.error_code,
            "retryAfter": error.retry_after,
            "batchSize": batch_size,
        }
        if error.detail and error.detail.get("additionalErrors"):
            data["additionalErrors"] = error.detail["additionalErrors"]
        if error.permanent or attempt >= max_attempts:
            why = "permanent failure" if error.permanent else f"gave up after {attempt} attempts"
            reason = f"{why}: {error.message}"
            failed.append((xref.pk, error.message))
            for run in runs:
                steps.append((run.pk, StepOutcome.FAILED, reason, data))
                finished_runs.append((run.pk, RunStatus.DEAD, now, None, run.master_id, reason[:4000]))
                if run.event_id:
                    events.append((run.event_id, EventStatus.DEAD, now, run.master_id, reason[:4000]))
                dead.append((run, reason, error))
            logger.warning(
                "cross reference %s write-back dead-lettered (status %s, errorcode %s)",
                xref.pk,
                error.http_status,
                error.error_code or "-",
            )
            continue
        delay = backoff_delay(attempt, base=2.0, cap=300.0, floor=error.retry_after or 0.0)
        due = now + dt.timedelta(seconds=delay)
        deferred.append((xref.pk, due, error.message))
        for run in runs:
            steps.append(
                (
                    run.pk,
                    StepOutcome.RETRY,
                    f"{error.message}; attempt {attempt + 1} in {delay:.1f}s",
                    data | {"delay": round(delay, 3)},
                )
            )
            finished_runs.append((run.pk, RunStatus.WAITING, None, due, run.master_id, error.message[:4000]))
    record_written(written, now=now)
    record_failed(failed, now=now)
    record_deferred(deferred, now=now)
    _append_steps(steps, started)
    update_rows(
        SyncRun._meta.db_table,
        "id",
        ("id", "status", "finished_at", "next_attempt_at", "master_id", "last_error"),
        ("bigint", "text", "timestamptz", "timestamptz", "text", "text"),
        finished_runs,
        expressions={"writeback_attempts": "t.writeback_attempts + 1"},
    )
    update_rows(
        InboundEvent._meta.db_table,
        "id",
        ("id", "status", "processed_at", "master_id", "reason"),
        ("bigint", "text", "timestamptz", "text", "text"),
        events,
    )
    if dead:
        snapshots = {
            e.pk: e for e in InboundEvent.objects.filter(pk__in={r.event_id for r, _, _ in dead if r.event_id})
        }
        DeadLetter.objects.bulk_create(
            [
                DeadLetter(
                    event=snapshots.get(run.event_id),
                    run=run,
                    stage="writeback",
                    reason=reason[:4000],
                    http_status=error.http_status,
                    error_code=(error.error_code or "")[:20],
                    error_detail=error.detail or {},
                    original_event=event_snapshot(snapshots[run.event_id]) if run.event_id in snapshots else {},
                )
                for run, reason, error in dead
            ]
        )
