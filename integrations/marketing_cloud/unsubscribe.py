"""Telling Marketing Cloud about opt-outs recorded elsewhere: Subscriber Status Unsubscribed.

When a golden record gets an opt-out of all marketing (from another system's record, a
steward, or a list import), each of the person's Marketing Cloud subscribers gets a pending
``UnsubscribeWriteback`` row (one per cross reference: a repeat lands on the same row). A
flush claims up to 50 due rows (``SKIP LOCKED``) and sends them in one SOAP ``Update`` of
``Subscriber`` objects; each object's result decides its row: written, or failed with
Marketing Cloud's message and error code. A fault or a network failure defers the whole
batch with the write-back's backoff, until ``HUB_WRITEBACK_MAX_ATTEMPTS``; Marketing Cloud's
shared breaker (``client.breaker``) holds every flush while it is open.

No loop: an opt-out that came from Marketing Cloud (its status read, its ENS events, a
journey or data extension row) is never sent back, and a subscriber Marketing Cloud already
reports as Unsubscribed is not told again.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone

from customers.choices import CrossReferenceStatus, HistoryAction
from customers.history import HistoryRow, write_history
from customers.models import CrossReference
from customers.signals import marketing_opt_outs_recorded
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.client import breaker, unit_client
from integrations.marketing_cloud.models import UnsubscribeWriteback
from integrations.marketing_cloud.subscriber_soap import UPDATE_BATCH, SubscriberSoap, UpdateResult
from integrations.queue import enqueue_once, enqueue_wake_up, task_started, wake_up_started
from integrations.transport import PermanentError, TransportError, backoff_delay

logger = logging.getLogger(__name__)

FLUSH_TASK = "integrations.marketing_cloud.unsubscribe.flush_unsubscribes"
FLUSH_FLAG = "mc-unsubscribe-flush"
FLUSH_WAKE_UP = "mc-unsubscribe-flush-later"
# Consent sources that are Marketing Cloud itself: what it told the hub, it knows.
FROM_MARKETING_CLOUD = ("MARKETING_CLOUD",)
ACTOR = "mc-unsubscribe"


def _from_marketing_cloud(source: str) -> bool:
    return source.upper().startswith(FROM_MARKETING_CLOUD)


def request_unsubscribes(opt_outs: list[tuple[int, dt.datetime, str]]) -> int:
    """Pending unsubscribes for the Marketing Cloud subscribers of these opted-out golden records."""
    wanted = {pk: (since, source) for pk, since, source in opt_outs if not _from_marketing_cloud(source or "")}
    if not wanted:
        return 0
    xrefs = list(
        CrossReference.objects.filter(
            individual_id__in=wanted,
            system=MARKETING_CLOUD,
            status=CrossReferenceStatus.VALID,
            individual__erased_at__isnull=True,
        )
        .exclude(source_status__iexact="Unsubscribed")
        .values_list("pk", "individual_id")
    )
    if not xrefs:
        return 0
    now = timezone.now()
    rows = [
        UnsubscribeWriteback(
            cross_reference_id=xref_id,
            state=UnsubscribeWriteback.PENDING,
            opted_out_since=wanted[individual_id][0],
            consent_source=(wanted[individual_id][1] or "")[:40],
            requested_at=now,
            due_at=now,
            attempts=0,
            last_error="",
            error_code="",
        )
        for xref_id, individual_id in xrefs
    ]
    UnsubscribeWriteback.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["cross_reference"],
        update_fields=[
            "state",
            "opted_out_since",
            "consent_source",
            "requested_at",
            "due_at",
            "attempts",
            "last_error",
            "error_code",
        ],
    )
    queue_flush()
    return len(rows)


@receiver(marketing_opt_outs_recorded)
def unsubscribe_in_marketing_cloud(sender: Any, opt_outs: list[tuple[int, dt.datetime, str]], **kwargs: Any) -> None:
    """In the opt-out's transaction: its pending rows and the flush commit with it."""
    request_unsubscribes(opt_outs)


def queue_flush(*, delay: float = 0.0) -> None:
    if delay > 0:
        enqueue_wake_up(FLUSH_TASK, flag=FLUSH_WAKE_UP, delay=delay)
    else:
        enqueue_once(FLUSH_TASK, flag=FLUSH_FLAG)


def _pending() -> Any:
    return UnsubscribeWriteback.objects.filter(state=UnsubscribeWriteback.PENDING)


def _queue_next_flush() -> None:
    next_due = _pending().order_by("due_at").values_list("due_at", flat=True).first()
    if next_due is None:
        return
    with transaction.atomic():
        queue_flush(delay=max(0.0, (next_due - timezone.now()).total_seconds()))


def flush_unsubscribes(client: Any = None, *, from_queue: bool = True) -> str:
    """django-q2 entry point: send one batch of due unsubscribes, then queue the next flush."""
    if from_queue:
        task_started(FLUSH_FLAG)
        wake_up_started(FLUSH_WAKE_UP)
    gate = breaker.check()
    if not gate.allowed:
        if _pending().exists():
            queue_flush(delay=gate.wait + random.uniform(0, 1))
        return f"deferred: {gate.reason}"
    limit = 1 if gate.probe else UPDATE_BATCH
    with transaction.atomic():
        rows = list(
            _pending()
            .filter(Q(due_at__lte=timezone.now()) | Q(due_at__isnull=True))
            .select_related("cross_reference__individual")
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("due_at", "id")[:limit]
        )
        if not rows:
            _queue_next_flush()
            return "nothing due"
        written = failed = 0
        errors: list[TransportError | None] = []
        # Each subscriber's unit is told, with that unit's token (one per MID).
        for mid, unit, group in business_units.group_by_unit(rows, lambda row: row.cross_reference.business_unit):
            results: list[UpdateResult] = []
            error: TransportError | None = None
            try:
                if unit is None:
                    raise PermanentError(business_units.not_configured(mid))
                keys = [row.cross_reference.external_id for row in group]
                results = SubscriberSoap(unit_client(unit, client)).unsubscribe(keys)
            except TransportError as exc:
                error = exc
            group_written, group_failed = _apply(group, results, error)
            written, failed = written + group_written, failed + group_failed
            errors.append(error)
    for error in errors:
        _record_health(error)
    _queue_next_flush()
    return f"{written} written, {failed} failed, {len(rows) - written - failed} deferred"


def _apply(
    rows: list[UnsubscribeWriteback], results: list[UpdateResult], error: TransportError | None
) -> tuple[int, int]:
    now = timezone.now()
    max_attempts = settings.WRITEBACK_MAX_ATTEMPTS
    history: list[HistoryRow] = []
    written = failed = 0
    for position, row in enumerate(rows):
        row.attempts += 1
        xref = row.cross_reference
        result = results[position] if error is None else None
        if result is not None and result.ok:
            row.state, row.written_at, row.due_at = UnsubscribeWriteback.WRITTEN, now, None
            row.last_error, row.error_code = "", ""
            written += 1
            history.append(
                HistoryRow(
                    individual_id=xref.individual_id,
                    master_id=xref.individual.master_id,
                    action=HistoryAction.WRITEBACK,
                    object_type="CrossReference",
                    object_id=xref.pk,
                    actor=ACTOR,
                    actor_user_id=None,
                    before=None,
                    after={"system": xref.system, "external_id": xref.external_id, "status": "Unsubscribed"},
                    created_at=now,
                )
            )
            continue
        if result is not None:  # Marketing Cloud refused this object: the same request fails again
            row.state, row.due_at = UnsubscribeWriteback.FAILED, None
            row.last_error, row.error_code = result.status_message or "refused", result.error_code
            failed += 1
            continue
        assert error is not None
        row.last_error, row.error_code = error.message[:2000], (error.error_code or "")[:20]
        if error.permanent or row.attempts >= max_attempts:
            why = "permanent failure" if error.permanent else f"gave up after {row.attempts} attempts"
            row.state, row.due_at = UnsubscribeWriteback.FAILED, None
            row.last_error = f"{why}: {error.message}"[:2000]
            failed += 1
            continue
        delay = backoff_delay(row.attempts, base=2.0, cap=300.0, floor=error.retry_after or 0.0)
        row.due_at = now + dt.timedelta(seconds=delay)
    UnsubscribeWriteback.objects.bulk_update(
        rows, ["state", "attempts", "due_at", "last_error", "error_code", "written_at"]
    )
    write_history(history)
    if failed:
        logger.warning("%s unsubscribe write-back(s) failed for good", failed)
    return written, failed


def _record_health(error: TransportError | None) -> None:
    if error is None or error.permanent:
        if error is None:
            breaker.record_success()
        return
    throttled = error.http_status == 429
    breaker.record_failure(
        error.message, trips_breaker=not throttled, pause_for=error.retry_after if throttled else None
    )


def retry(rows: Any) -> int:
    """A steward's retry: failed (or waiting) rows due now, attempts reset."""
    with transaction.atomic():
        count = rows.exclude(state=UnsubscribeWriteback.WRITTEN).update(
            state=UnsubscribeWriteback.PENDING, due_at=timezone.now(), attempts=0
        )
        if count:
            queue_flush()
    return count
