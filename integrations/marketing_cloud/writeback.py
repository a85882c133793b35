"""Writing master IDs back to Marketing Cloud, batched.

Pending cross references are the queue (``writeback_state = pending`` with a due
time): several changes for one subscriber coalesce into that one row, and a flush
claims up to 50 due rows (``SKIP LOCKED``, so concurrent flushes never share one)
and sends them in one call: a single row as ``PUT .../rows/{pk}:{value}``, more as
``POST .../rowset`` (Marketing Cloud's advice: at most 50 rows per call). When at
least ``HUB_MC_ASYNC_WRITEBACK_THRESHOLD`` are due (after a backfill), the flush sends
them in bulk through the asynchronous API instead (``bulk_writeback``). How each
row's outcome is recorded is ``writeback_outcomes``.

Before calling, the flush asks Marketing Cloud's shared breaker (``client.breaker``, an
``integrations.transport.CircuitBreaker``): a 429 pauses every worker until Retry-After
has passed, and an open circuit breaker holds all calls until a single probe succeeds.
Nothing ever sleeps in a worker: a deferred flush is a queue row that becomes visible later.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from customers.models import CrossReference
from integrations.faults import fault_point
from integrations.marketing_cloud import bulk_writeback, business_units
from integrations.marketing_cloud.client import breaker, unit_client
from integrations.marketing_cloud.writeback_outcomes import (
    FLUSH_FLAG,
    FLUSH_TASK,
    FLUSH_WAKE_UP,
    STEP,
    RowResult,
    claimable,
    pending_writebacks,
    queue_flush,
    queue_next_flush,
    record_connector_health,
    record_outcomes,
)
from integrations.models import QueuedFlag
from integrations.queue import task_started, wake_up_started
from integrations.transport import PermanentError, TransportError

__all__ = ["BATCH_SIZE", "FLUSH_TASK", "STEP", "flush_if_starved", "flush_writebacks", "queue_flush"]

logger = logging.getLogger(__name__)

BATCH_SIZE = 50


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


def _send(client: Any, xrefs: list[CrossReference], de_key: str) -> tuple[list[RowResult], int]:
    """Call Marketing Cloud for the claimed rows of one business unit; returns per-row results and calls made."""
    pk_name, field = settings.MC_DE_PRIMARY_KEY, settings.MC_MASTER_ID_FIELD
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


def _failed(xrefs: list[CrossReference], error: TransportError) -> list[RowResult]:
    return [RowResult(x, "" if x.individual.erased_at else x.individual.master_id, error) for x in xrefs]


def _send_per_unit(client: Any, xrefs: list[CrossReference]) -> tuple[list[RowResult], int]:
    """Each business unit's rows to its own data extension, with its own token (one per MID)."""
    results: list[RowResult] = []
    calls = 0
    for mid, unit, rows in business_units.group_by_unit(xrefs, lambda x: x.business_unit):
        if unit is None:
            results += _failed(rows, PermanentError(business_units.not_configured(mid)))
            continue
        try:
            unit_client_ = unit_client(unit, client)
            fault_point("before-mc-call")
            unit_results, unit_calls = _send(unit_client_, rows, unit.de_key)
            fault_point("after-mc-call")
        except TransportError as exc:  # not configured, or no token: every row of the unit shares the fate
            unit_results, unit_calls = _failed(rows, exc), 0
        results += unit_results
        calls += unit_calls
    return results, calls


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
        if pending_writebacks().exists():
            queue_flush(delay=gate.wait + random.uniform(0, 1))
        return f"deferred: {gate.reason}"
    threshold = settings.MC_ASYNC_WRITEBACK_THRESHOLD
    if threshold and not gate.probe and bulk_writeback.enough_due(threshold):
        return bulk_writeback.submit_bulk(client)
    limit = 1 if gate.probe else BATCH_SIZE
    with transaction.atomic():
        xrefs = list(
            claimable(pending_writebacks().filter(writeback_due_at__lte=timezone.now()))
            .select_related("individual")
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("writeback_due_at", "id")[:limit]
        )
        if not xrefs:
            queue_next_flush()
            return "nothing due"
        started = timezone.now()
        results, calls = _send_per_unit(client, xrefs)
        record_outcomes(results, started=started, batch_size=len(xrefs))
    record_connector_health(results)
    queue_next_flush()
    failed = sum(1 for r in results if r.error)
    return f"{len(results) - failed} written, {failed} failed, {calls} call(s)"
