"""What a write-back to Marketing Cloud did, recorded; and asking for the next flush.

Shared by the synchronous flush (``writeback``: rowsets of at most 50) and the asynchronous one
(``bulk_writeback``: large requests whose per-row results arrive later): every row's outcome is
recorded the same way, set-based (cross reference state, the runs waiting for it and their steps,
their events, history, dead letters), and the shared breaker hears about the call's health.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
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
from integrations.marketing_cloud.client import breaker
from integrations.marketing_cloud.models import BulkWriteback
from integrations.models import DeadLetter, InboundEvent, SyncRun, SyncStep
from integrations.queue import enqueue_once, enqueue_wake_up
from integrations.runs import event_snapshot
from integrations.transport import TransportError, backoff_delay

logger = logging.getLogger("integrations.marketing_cloud.writeback")

FLUSH_TASK = "integrations.marketing_cloud.writeback.flush_writebacks"
STEP = "write back master ID"


FLUSH_FLAG = "write-back-flush"
FLUSH_WAKE_UP = "write-back-flush-later"


def queue_flush(*, delay: float = 0.0) -> None:
    """Ask for a flush: now (coalesced with any flush already waiting), or a timed wake-up."""
    if delay > 0:
        enqueue_wake_up(FLUSH_TASK, flag=FLUSH_WAKE_UP, delay=delay)
    else:
        enqueue_once(FLUSH_TASK, flag=FLUSH_FLAG)


@dataclass
class RowResult:
    xref: CrossReference
    master_id: str
    error: TransportError | None = None


def pending_writebacks() -> Any:
    """Marketing Cloud cross references whose master ID is still to be written."""
    return CrossReference.objects.filter(system=MARKETING_CLOUD, writeback_state=WritebackState.PENDING)


def queue_next_flush() -> None:
    """Queue the flush for the earliest due write-back (rows held by a bulk request have no due time)."""
    next_due = (
        claimable(pending_writebacks().filter(writeback_due_at__isnull=False))
        .order_by("writeback_due_at")
        .values_list("writeback_due_at", flat=True)
        .first()
    )
    if next_due is None:
        return
    with transaction.atomic():  # a flush due now is coalesced: its flag and its queue row commit together
        queue_flush(delay=max(0.0, (next_due - timezone.now()).total_seconds()))


def record_connector_health(results: list[RowResult]) -> None:
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


def record_outcomes(results: list[RowResult], *, started: dt.datetime, batch_size: int, how: str = "") -> None:
    """Record every row's outcome set-based: cross references, their runs, steps, events, history."""
    now = timezone.now()
    runs_by_key = _waiting_runs([r.xref for r in results])
    max_attempts = settings.WRITEBACK_MAX_ATTEMPTS
    how = how or ("PUT row" if batch_size == 1 else f"POST rowset of {batch_size}")
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


# Cross references in a bulk request still in flight are held by it: no other flush may send them
# (two writes of one row in flight could land in either order). The partial GIN index on the
# in-flight requests' ``xref_ids`` answers this per candidate row. The states are inlined (fixed
# constants, not input) so the planner sees the index's own predicate.
_IN_FLIGHT_STATES = ", ".join(f"'{state}'" for state in BulkWriteback.IN_FLIGHT)
_HELD_BY_BULK = (
    f"EXISTS (SELECT 1 FROM {BulkWriteback._meta.db_table} b WHERE b.state IN ({_IN_FLIGHT_STATES}) "
    f'AND b.xref_ids @> ARRAY["{CrossReference._meta.db_table}"."id"])'
)


def claimable(queryset: Any) -> Any:
    """``queryset`` of cross references without those a bulk request in flight holds.

    Unchanged (no extra condition at all) while no bulk request is in flight.
    """
    if not BulkWriteback.objects.filter(state__in=BulkWriteback.IN_FLIGHT).exists():
        return queryset
    return queryset.extra(where=[f"NOT {_HELD_BY_BULK}"])  # noqa: S610 - fixed SQL, no input in it
