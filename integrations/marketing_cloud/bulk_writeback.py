"""Master-ID write-backs in bulk: Marketing Cloud's asynchronous data-extension API.

After a backfill of a million subscribers, rowsets of 50 would take 20,000 calls. When at least
``HUB_MC_ASYNC_WRITEBACK_THRESHOLD`` write-backs are due, the flush sends them instead as
``PUT /data/v1/async/dataextensions/key:{key}/rows`` (an upsert; body ``{"items": [{pk, field}]}``),
up to :data:`MAX_ROWS` rows and :data:`MAX_BYTES` of JSON a request, answered 202 with a
``requestId``. Marketing Cloud processes the request later; ``GET /data/v1/async/{id}/status``
tells when it is complete and ``GET /data/v1/async/{id}/results`` gives one result per row, in the
order sent (sources in ``sandboxes.marketing_cloud.async_rows``, which emulates the API).

No row is lost or sent twice at once, whatever dies when:

1. One transaction claims the due rows (``SKIP LOCKED``), records the request (:class:`BulkWriteback`:
   cross reference IDs and master IDs, in order), takes the rows' due time away (they stay
   *pending*: nothing is written yet) and queues a poll for the case that the worker dies next.
2. The call, outside any transaction. A refusal is every row's outcome (transient: sent again with
   backoff; permanent: dead letter), as for a rowset.
3. One transaction records the request ID. A worker that died between 1 and 3 leaves a request
   *submitting*: the poll releases its rows after :func:`stale_submission_after` (due now, sent
   again; an upsert of the same master ID twice is harmless).
4. Polls with backoff (1 s, doubling to a minute). Each result is mapped back to its row: written,
   failed for good (dead letter, as a rowset's permanent error), or sent again (a deadlock, which
   Marketing Cloud reports ending "Rerun the transaction."). A request Marketing Cloud reports as
   failed, does not know after :data:`NOT_FOUND_GRACE`, or whose results do not match the rows, has
   its rows sent again, counted as a failed attempt (bounded by ``HUB_WRITEBACK_MAX_ATTEMPTS``).

While a request is in flight no other flush sends its rows (``writeback_outcomes.claimable``). A
row whose golden record changed meanwhile is due again: it is left pending (the newer master ID
goes out in the next flush) whatever this request's result for it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from customers.choices import WritebackState
from customers.models import CrossReference
from customers.writeback_state import hold_pending
from integrations.choices import MARKETING_CLOUD
from integrations.faults import fault_point
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.client import breaker, unit_client
from integrations.marketing_cloud.models import BulkWriteback
from integrations.marketing_cloud.writeback_outcomes import (
    RowResult,
    claimable,
    pending_writebacks,
    queue_next_flush,
    record_connector_health,
    record_outcomes,
)
from integrations.queue import enqueue_wake_up, wake_up_started
from integrations.transport import PermanentError, TransientError, TransportError

logger = logging.getLogger(__name__)

POLL_TASK = "integrations.marketing_cloud.bulk_writeback.poll_bulk_writebacks"
POLL_WAKE_UP = "bulk-write-back-poll"
# Per request. Marketing Cloud documents no limit; Segment's production client sends at most
# 5,000,000 bytes (sandboxes.marketing_cloud.async_rows): stay well under it.
MAX_ROWS = 10_000
MAX_BYTES = 4_000_000
FIRST_POLL = 1.0
POLL_CAP = 60.0
# Right after a submit the status record is sometimes not found yet (public clients' experience).
NOT_FOUND_GRACE = dt.timedelta(minutes=5)
# A request still not complete (or not answerable) this long after submitting is given up: rows sent again.
GIVE_UP_AFTER = dt.timedelta(hours=6)
RESULTS_PAGE = 2500
POLLS_PER_RUN = 20
# Marketing Cloud's message for a row that lost a deadlock: sending it again succeeds.
_RETRYABLE_ROW_SUFFIX = "Rerun the transaction."


def stale_submission_after() -> dt.timedelta:
    """How long a claimed request may stay unconfirmed before its rows are released: past any call's end."""
    return dt.timedelta(seconds=2 * settings.MC_HTTP_TIMEOUT + 30)


def enough_due(threshold: int) -> bool:
    """Whether at least ``threshold`` write-backs are due now (counts no further than that)."""
    due = claimable(pending_writebacks().filter(writeback_due_at__lte=timezone.now()))
    return due[:threshold].count() >= threshold


def _rows_path(de_key: str) -> str:
    return f"/data/v1/async/dataextensions/key:{quote(de_key, safe='')}/rows"


def _unit_client(client: Any, mid: str) -> Any:
    unit = business_units.unit_for_mid(mid)
    if unit is None:
        raise PermanentError(business_units.not_configured(mid))
    return unit_client(unit, client)


def _items(xrefs: list[CrossReference]) -> tuple[list[dict[str, str]], list[CrossReference], list[str]]:
    """The request's items, the rows they are (as many as fit in MAX_BYTES) and the master IDs sent."""
    pk_name, field = settings.MC_DE_PRIMARY_KEY, settings.MC_MASTER_ID_FIELD
    items: list[dict[str, str]] = []
    kept: list[CrossReference] = []
    masters: list[str] = []
    size = len('{"items": []}')
    for xref in xrefs:
        # An erased person's subscriber keeps no master ID in Marketing Cloud: the write clears it.
        master_id = "" if xref.individual.erased_at else xref.individual.master_id
        item = {pk_name: xref.external_id, field: master_id}
        size += len(json.dumps(item)) + 2
        if kept and size > MAX_BYTES:
            break
        items.append(item)
        kept.append(xref)
        masters.append(master_id)
    return items, kept, masters


def submit_bulk(client: Any = None) -> str:
    """Claim up to MAX_ROWS due write-backs and send them as one asynchronous upsert."""
    now = timezone.now()
    with transaction.atomic():
        due = claimable(pending_writebacks().filter(writeback_due_at__lte=now))
        # One request goes to one business unit: the unit of the row due first.
        first = due.order_by("writeback_due_at", "id").values_list("business_unit", flat=True).first()
        mid = first or ""
        unit = business_units.unit_for_mid(mid)
        xrefs = list(
            due.filter(business_unit=mid)
            .select_related("individual")
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("writeback_due_at", "id")[:MAX_ROWS]
        )
        if not xrefs:
            queue_next_flush()
            return "nothing due"
        items, kept, masters = _items(xrefs)
        request = BulkWriteback.objects.create(
            de_key=unit.de_key if unit else settings.MC_DE_KEY,
            business_unit=mid,
            rows=len(kept),
            xref_ids=[x.pk for x in kept],
            master_ids=masters,
            claimed_at=now,
        )
        hold_pending(request.xref_ids)
        # Should this worker die before the request ID is recorded, this poll releases the rows.
        enqueue_wake_up(POLL_TASK, flag=POLL_WAKE_UP, delay=stale_submission_after().total_seconds())
    try:
        client = _unit_client(client, request.business_unit)
        fault_point("before-mc-bulk-call")
        answer = client.request("PUT", _rows_path(request.de_key), json={"items": items})
        fault_point("after-mc-bulk-call")
        request_id = str(answer.get("requestId") or "") if isinstance(answer, dict) else ""
        if not request_id:
            raise TransientError("Marketing Cloud accepted the bulk request without naming a requestId")
    except TransportError as exc:
        results = _release(request, BulkWriteback.FAILED, exc)
        record_connector_health(results)
        return f"bulk request of {request.rows} rows refused: {exc.message}"
    with transaction.atomic():
        BulkWriteback.objects.filter(pk=request.pk, state=BulkWriteback.SUBMITTING).update(
            request_id=request_id[:64],
            state=BulkWriteback.PENDING,
            submitted_at=timezone.now(),
            next_poll_at=timezone.now() + dt.timedelta(seconds=FIRST_POLL),
        )
        enqueue_wake_up(POLL_TASK, flag=POLL_WAKE_UP, delay=FIRST_POLL)
    breaker.record_success()
    queue_next_flush()  # more may be due: the next flush sends the next request
    logger.info("bulk write-back %s submitted: %s rows, request %s", request.pk, request.rows, request_id)
    return f"{request.rows} rows submitted in bulk request {request_id}"


def _held(request: BulkWriteback) -> dict[int, CrossReference]:
    """The request's cross references it still holds (pending, no due time), locked."""
    return {
        x.pk: x
        for x in CrossReference.objects.select_for_update(of=("self",))
        .select_related("individual")
        .filter(
            pk__in=request.xref_ids,
            system=MARKETING_CLOUD,
            writeback_state=WritebackState.PENDING,
            writeback_due_at__isnull=True,
        )
        .order_by("id")
    }


def _how(request: BulkWriteback) -> str:
    return f"async upsert of {request.rows} (request {request.request_id or request.pk})"


def _release(request: BulkWriteback, state: str, error: TransportError) -> list[RowResult]:
    """End ``request`` without results: every row it holds gets ``error`` as its outcome."""
    with transaction.atomic():
        locked = BulkWriteback.objects.select_for_update().get(pk=request.pk)
        if locked.state not in BulkWriteback.IN_FLIGHT:
            return []
        held = _held(locked)
        results = [
            RowResult(held[xref_id], master_id, error)
            for xref_id, master_id in zip(locked.xref_ids, locked.master_ids, strict=True)
            if xref_id in held
        ]
        record_outcomes(
            results, started=locked.submitted_at or locked.claimed_at, batch_size=locked.rows, how=_how(locked)
        )
        failed = sum(1 for r in results if r.error and (r.error.permanent or _gave_up(r)))
        locked.state = state
        locked.last_error = error.message[:4000]
        locked.completed_at = timezone.now()
        locked.next_poll_at = None
        locked.rows_failed = failed
        locked.rows_retried = len(results) - failed
        locked.rows_superseded = locked.rows - len(results)
        locked.save()
        queue_next_flush()
    logger.warning("bulk write-back %s ended %s: %s row(s) sent again later", request.pk, state, locked.rows_retried)
    return results


def _gave_up(result: RowResult) -> bool:
    return result.xref.writeback_attempts + 1 >= settings.WRITEBACK_MAX_ATTEMPTS


def _row_error(item: Any) -> TransportError | None:
    """One row's result as the write-back error it is (None when written)."""
    if isinstance(item, dict) and item.get("status") == "OK":
        return None
    if not isinstance(item, dict):
        return TransientError("Marketing Cloud gave no readable result for this row")
    message = str(item.get("message") or "row not saved")[:1000]
    causes = [
        {"message": str(cause.get("errorMessage", ""))[:500], "errorcode": cause.get("errorCode")}
        for cause in (item.get("errors") or [])[:20]
        if isinstance(cause, dict)
    ]
    text = "; ".join([message, *(c["message"] for c in causes[:3] if c["message"])])
    detail = {"message": message, "errorcode": item.get("errorCode"), "additionalErrors": causes}
    kind = TransientError if message.rstrip().endswith(_RETRYABLE_ROW_SUFFIX) else PermanentError
    return kind(text, error_code=str(item.get("errorCode") or "")[:20], detail=detail)


def _results(client: Any, request: BulkWriteback) -> list[Any]:
    """Every row's result, page by page, following the page size the answer names."""
    items: list[Any] = []
    page = 1
    while page <= request.rows + 1:
        body = client.request(
            "GET",
            f"/data/v1/async/{quote(request.request_id, safe='')}/results?$page={page}&$pageSize={RESULTS_PAGE}",
        )
        found = body.get("items") if isinstance(body, dict) else None
        if not isinstance(found, list):
            raise TransientError("Marketing Cloud gave no results for a complete request")
        items += found
        count = body.get("count")
        if not found or (isinstance(count, int) and len(items) >= count):
            break
        page += 1
    return items


def _complete(request: BulkWriteback, errors: list[TransportError | None]) -> str:
    with transaction.atomic():
        locked = BulkWriteback.objects.select_for_update().get(pk=request.pk)
        if locked.state != BulkWriteback.PENDING:
            return f"bulk request {locked.pk} was already {locked.state}"
        held = _held(locked)
        results = [
            RowResult(held[xref_id], master_id, error)
            for xref_id, master_id, error in zip(locked.xref_ids, locked.master_ids, errors, strict=True)
            if xref_id in held
        ]
        record_outcomes(
            results, started=locked.submitted_at or locked.claimed_at, batch_size=locked.rows, how=_how(locked)
        )
        locked.state = BulkWriteback.COMPLETE
        locked.completed_at = locked.last_polled_at = timezone.now()
        locked.next_poll_at = None
        locked.request_status, locked.result_status = request.request_status, request.result_status
        locked.polls = request.polls
        locked.rows_written = sum(1 for r in results if r.error is None)
        locked.rows_failed = sum(1 for r in results if r.error and (r.error.permanent or _gave_up(r)))
        locked.rows_retried = len(results) - locked.rows_written - locked.rows_failed
        locked.rows_superseded = locked.rows - len(results)
        locked.last_error = next((r.error.message for r in results if r.error), "")[:4000]
        locked.save()
        queue_next_flush()
    return (
        f"bulk request {locked.request_id}: {locked.rows_written} written, {locked.rows_failed} failed, "
        f"{locked.rows_retried} to send again, {locked.rows_superseded} changed meanwhile"
    )


def _poll_later(request: BulkWriteback, note: str = "") -> str:
    request.polls += 1
    delay = min(POLL_CAP, FIRST_POLL * 2**request.polls)
    request.last_polled_at = timezone.now()
    request.next_poll_at = request.last_polled_at + dt.timedelta(seconds=delay)
    if note:
        request.last_error = note[:4000]
    request.save(
        update_fields=["polls", "last_polled_at", "next_poll_at", "last_error", "request_status", "result_status"]
    )
    return f"bulk request {request.request_id}: {request.request_status or note}, next poll in {delay:.0f}s"


def _poll_one(client: Any, request: BulkWriteback) -> str:
    age = timezone.now() - (request.submitted_at or request.claimed_at)
    try:
        client = _unit_client(client, request.business_unit)
        body = client.request("GET", f"/data/v1/async/{quote(request.request_id, safe='')}/status")
    except TransportError as exc:
        if exc.http_status == 429:
            breaker.record_failure(exc.message, trips_breaker=False, pause_for=exc.retry_after)
        if exc.permanent or age > GIVE_UP_AFTER:
            _release(
                request, BulkWriteback.FAILED, TransientError(f"status of the bulk request unreadable: {exc.message}")
            )
            return f"bulk request {request.request_id}: status unreadable, rows sent again"
        return _poll_later(request, f"status poll failed: {exc.message}")
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, dict):
        codes = [m.get("resultCode") for m in (body or {}).get("resultMessages") or [] if isinstance(m, dict)]
        note = f"Marketing Cloud has no status for the request ({', '.join(map(str, codes)) or 'no reason given'})"
        if age <= NOT_FOUND_GRACE:
            return _poll_later(request, note)
        _release(request, BulkWriteback.RELEASED, TransientError(f"{note} after {NOT_FOUND_GRACE}"))
        return f"bulk request {request.request_id}: unknown to Marketing Cloud, rows sent again"
    request.request_status = str(status.get("requestStatus") or "")[:20]
    request.result_status = str(status.get("resultStatus") or "")[:40]
    if request.request_status == "Error":
        _release(request, BulkWriteback.FAILED, TransientError("Marketing Cloud reports the bulk request failed"))
        return f"bulk request {request.request_id}: failed in Marketing Cloud, rows sent again"
    # "Complete" on the reference page, "Completed" in its table: both end the request.
    if not request.request_status.startswith("Complete"):
        if age > GIVE_UP_AFTER:
            _release(
                request, BulkWriteback.RELEASED, TransientError(f"bulk request not complete after {GIVE_UP_AFTER}")
            )
            return f"bulk request {request.request_id}: given up, rows sent again"
        return _poll_later(request)
    request.polls += 1
    if request.result_status == "OK" and not status.get("hasErrors"):
        return _complete(request, [None] * request.rows)
    try:
        items = _results(client, request)
    except TransportError as exc:
        return _poll_later(request, f"results unreadable: {exc.message}")
    if len(items) != request.rows:
        _release(
            request,
            BulkWriteback.FAILED,
            TransientError(
                f"Marketing Cloud gave {len(items)} results for {request.rows} rows; cannot tell which failed"
            ),
        )
        return f"bulk request {request.request_id}: results do not match, rows sent again"
    return _complete(request, [_row_error(item) for item in items])


def _release_stale_submissions() -> list[str]:
    stale = timezone.now() - stale_submission_after()
    done = []
    for request in BulkWriteback.objects.filter(state=BulkWriteback.SUBMITTING, claimed_at__lt=stale).order_by("id")[
        :POLLS_PER_RUN
    ]:
        _release(
            request,
            BulkWriteback.RELEASED,
            TransientError("the bulk request was claimed but its submission never confirmed; rows sent again"),
        )
        done.append(f"bulk request {request.pk} released")
    return done


def schedule_next_poll() -> None:
    """Queue the poll for the earliest in-flight request (an unconfirmed one: when it turns stale)."""
    pending = (
        BulkWriteback.objects.filter(state=BulkWriteback.PENDING, next_poll_at__isnull=False)
        .order_by("next_poll_at")
        .values_list("next_poll_at", flat=True)
        .first()
    )
    claimed = (
        BulkWriteback.objects.filter(state=BulkWriteback.SUBMITTING)
        .order_by("claimed_at")
        .values_list("claimed_at", flat=True)
        .first()
    )
    moments = [m for m in (pending, claimed + stale_submission_after() if claimed else None) if m]
    if not moments:
        return
    with transaction.atomic():
        enqueue_wake_up(POLL_TASK, flag=POLL_WAKE_UP, delay=max(0.0, (min(moments) - timezone.now()).total_seconds()))


def poll_bulk_writebacks(client: Any = None, *, from_queue: bool = True) -> str:
    """django-q2 entry point: poll the bulk requests that are due, release stale ones, queue the next poll."""
    if from_queue:
        wake_up_started(POLL_WAKE_UP)
    done = _release_stale_submissions()
    gate = breaker.check()
    if not gate.allowed:
        with transaction.atomic():
            enqueue_wake_up(POLL_TASK, flag=POLL_WAKE_UP, delay=gate.wait + 1.0)
        return f"deferred: {gate.reason}"
    for _ in range(POLLS_PER_RUN):
        with transaction.atomic():
            request = (
                BulkWriteback.objects.select_for_update(skip_locked=True)
                .filter(state=BulkWriteback.PENDING, next_poll_at__lte=timezone.now())
                .order_by("next_poll_at", "id")
                .first()
            )
            if request is None:
                break
            done.append(_poll_one(client, request))
    schedule_next_poll()
    return "; ".join(done) or "nothing to poll"
