"""Reconciliation poller: what no journey call brought in, read from the data extension.

Which API: the REST ``GET /data/v1/customobjectdata/key/{key}/rowset`` with
``$filter``, ``$orderBy`` and ``$pageSize`` (up to 2,500 rows a page). It uses the
same OAuth token and REST base as the write-back, answers JSON, and filters on
``ModifiedDate`` server-side, so a run reads only what changed since the watermark.
Later pages are read through ``links.next`` (``/v1/customobjectdata/token/{requestToken}
/rowset?$page=N``, relative to the REST base's ``/data``): the continuation of the
first read's result, so a row changed while the run pages on cannot shift another
across a page boundary, as re-running the query with ``$page=2`` could.

Dates: row reads give ``6/23/2024 12:00:00 AM`` in Marketing Cloud system time (US
Central Standard Time, UTC-6 all year), and dates written by SQL activities with
``GETDATE()`` are in that time too (shared reference §6). They are parsed in it,
the watermark is the instant they name, and the ``$filter`` literal is written in
it (ISO 8601 without an offset, which the tenant compares as system time
**(inferred)**). The documented alternative, a SOAP ``Retrieve`` of
``DataExtensionObject[key]`` with a ``SimpleFilterPart`` and ``ContinueRequest``
paging, needs the SOAP endpoint and XML envelopes for the same result; it is what
to fall back to should a tenant refuse the REST route.

Each run reads from ``watermark - overlap`` (rows committed late in Marketing Cloud
with an older ModifiedDate are still caught), ordered by ModifiedDate, through every
page; a row becomes an event only when the hub has not seen that subscriber, or has
seen an older change. Events take the same path as the journey's: stored, queued,
processed, written back. The watermark only moves after every page was read.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.db import transaction
from django.utils import timezone

from customers.cim import CimValidationError
from customers.models import CrossReference
from integrations.choices import MARKETING_CLOUD, EventChannel
from integrations.intake import AcceptedEvent, store_events, store_rejected
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.business_units import BUSINESS_UNIT_FIELD, BusinessUnit
from integrations.marketing_cloud.client import unit_client
from integrations.marketing_cloud.mapping import IN_ARGUMENTS, mc_datetime, subscriber_to_cim
from integrations.marketing_cloud.models import ReconciliationState
from integrations.marketing_cloud.schema import MC_SYSTEM_TIME
from integrations.queue import enqueue
from integrations.transport import PermanentError, TransportError

logger = logging.getLogger(__name__)

POLL_TASK = "integrations.marketing_cloud.poller.poll_data_extension"
SCHEDULE_NAME = "Marketing Cloud reconciliation"
_CANONICAL = {name.lower(): name for name in IN_ARGUMENTS}


def row_to_subscriber(item: dict[str, Any]) -> dict[str, Any]:
    """A rowset item (lower-cased ``keys`` and ``values``) as journey in-arguments."""
    merged = {**(item.get("values") or {}), **(item.get("keys") or {})}
    return {_CANONICAL[name.lower()]: value for name, value in merged.items() if name.lower() in _CANONICAL}


def _parse_modified(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return mc_datetime(str(value), "ModifiedDate")
    except CimValidationError:
        return None


def queue_poll() -> str:
    return enqueue(POLL_TASK, task_name="mc-reconciliation")


@dataclass
class ReconciliationRun:
    """What one run read and sent; ``status`` is "succeeded" or "failed"."""

    de_key: str
    status: str
    since: dt.datetime | None
    watermark: dt.datetime | None
    rows: int
    pages: int
    sent: int
    rejected: int
    error: str = ""

    def summary(self) -> str:
        if self.status == "failed":
            return f"failed: {self.error}"
        return f"{self.rows} rows in {self.pages} page(s), {self.sent} sent"


def poll_data_extension(client: Any = None) -> str:
    """django-q2 entry point (scheduled, or started by hand in the admin): every business unit's data extension."""
    runs = [reconcile(client, unit=unit) for unit in business_units.units()]
    if len(runs) == 1:
        return runs[0].summary()
    return "; ".join(f"{unit.name}: {run.summary()}" for unit, run in zip(business_units.units(), runs, strict=True))


def reconcile(client: Any = None, *, unit: BusinessUnit | None = None) -> ReconciliationRun:
    """Read every row of ``unit``'s data extension (default: the default unit's) changed since the watermark
    (less the overlap) and send what the hub lacks, as records of that unit."""
    unit = unit or business_units.default_unit()
    de_key = unit.de_key
    state_rows = ReconciliationState.objects.filter(business_unit=unit.state_key)
    with transaction.atomic():
        ReconciliationState.objects.get_or_create(business_unit=unit.state_key, de_key=de_key)
        # The row lock keeps two runs (schedule + a steward's click) from reading at once.
        state = state_rows.select_for_update(nowait=False).get(de_key=de_key)
        state.last_started_at = timezone.now()
        state.last_status = "running"
        state.save()
    since = state.watermark - dt.timedelta(seconds=state.overlap_seconds) if state.watermark else None
    totals = {"rows": 0, "pages": 0, "sent": 0, "rejected": 0}
    high_water = state.watermark
    try:
        client = unit_client(unit, client)
        path: str | None = _first_page_path(de_key, since, state.page_size)
        while path is not None:
            body = client.request("GET", path) or {}
            items = body.get("items") or []
            totals["pages"] += 1
            totals["rows"] += len(items)
            high_water = _take_page(items, totals, high_water, unit)
            path = _next_page_path((body.get("links") or {}).get("next")) if items else None
    except TransportError as exc:
        _finish(state.pk, "failed", totals, high_water=None, error=exc.message)
        logger.warning(
            "reconciliation of %s failed after %s page(s): %s", de_key, totals["pages"], exc.http_status or "network"
        )
        return ReconciliationRun(de_key, "failed", since, state.watermark, error=exc.message, **totals)
    watermark = _finish(state.pk, "succeeded", totals, high_water=high_water)
    return ReconciliationRun(de_key, "succeeded", since, watermark, **totals)


def mc_filter_stamp(moment: dt.datetime) -> str:
    """``moment`` as a ``$filter`` date literal: ISO 8601 in Marketing Cloud system time, no offset."""
    return moment.astimezone(MC_SYSTEM_TIME).strftime("%Y-%m-%dT%H:%M:%S")


def _first_page_path(de_key: str, since: dt.datetime | None, page_size: int) -> str:
    query = f"$page=1&$pageSize={page_size}&$orderBy={quote('ModifiedDate asc')}"
    if since is not None:
        query += "&$filter=" + quote(f"ModifiedDate gt '{mc_filter_stamp(since)}'")
    return f"/data/v1/customobjectdata/key/{quote(de_key, safe='')}/rowset?{query}"


def _next_page_path(link: Any) -> str | None:
    """The REST path of ``links.next``, which the tenant gives relative to ``/data``.

    Only a continuation of a row read is followed: the link comes from the other side, and the
    client sends our token wherever it points.
    """
    if not isinstance(link, str) or not link:
        return None
    path = link if link.startswith("/data/") else "/data" + (link if link.startswith("/") else "/" + link)
    if not path.startswith("/data/v1/customobjectdata/") or "://" in path or ".." in path:
        raise PermanentError(f"unexpected links.next in a row read: {link[:100]!r}")
    return path


def _take_page(
    items: list[dict[str, Any]], totals: dict[str, int], high_water: dt.datetime | None, unit: BusinessUnit
) -> Any:
    rows = [row_to_subscriber(item) for item in items]
    keys = [str(r.get("SubscriberKey") or "") for r in rows]
    known = {
        key: modified
        for key, modified in CrossReference.objects.filter(system=MARKETING_CLOUD, external_id__in=keys).values_list(
            "external_id", "source_modified_at"
        )
    }
    accepted: list[AcceptedEvent] = []
    unit_part = f"{unit.state_key}:" if unit.state_key else ""  # the single unit's keys stay as they were
    for args in rows:
        key = str(args.get("SubscriberKey") or "")
        modified = _parse_modified(args.get("ModifiedDate"))
        if modified and (high_water is None or modified > high_water):
            high_water = modified
        if key in known and (modified is None or (known[key] is not None and modified <= known[key])):
            continue  # the hub already has this change (or a newer one), or nothing says it changed
        raw = repr(sorted(args.items())).encode()
        try:
            cim = subscriber_to_cim(args, prefix="row")
            if unit.mid:  # the unit whose data extension holds the row: its cross reference records it
                cim[BUSINESS_UNIT_FIELD] = unit.mid
        except CimValidationError as exc:
            store_rejected(
                channel=EventChannel.POLLER,
                raw_body=raw,
                headers={},
                content_type="application/json",
                reason=f"{exc.field}: {exc.message}",
                system=MARKETING_CLOUD,
                external_id=key,
                payload=args,
            )
            totals["rejected"] += 1
            continue
        changed = args.get("ModifiedDate") or args.get("CreatedDate") or "unknown"
        accepted.append(
            AcceptedEvent(
                channel=EventChannel.POLLER,
                system=MARKETING_CLOUD,
                external_id=key,
                idempotency_key=f"mc-poll:{unit_part}{key}:{changed}",
                raw_body=raw,
                headers={},
                content_type="application/json",
                payload=args,
                individual_cim=cim,
                occurred_at=modified,
            )
        )
    if accepted:
        results = store_events(accepted)
        totals["sent"] += sum(1 for _, duplicate in results if not duplicate)
    return high_water


def _finish(
    state_pk: int, status: str, totals: dict[str, int], *, high_water: dt.datetime | None, error: str = ""
) -> dt.datetime | None:
    """Record the run; returns the watermark as it stands afterwards."""
    with transaction.atomic():
        state = ReconciliationState.objects.select_for_update().get(pk=state_pk)
        if high_water is not None and (state.watermark is None or high_water > state.watermark):
            state.watermark = high_water
        state.last_finished_at = timezone.now()
        state.last_status = status
        state.last_rows_read = totals["rows"]
        state.last_pages_read = totals["pages"]
        state.last_events_sent = totals["sent"]
        state.last_rows_rejected = totals["rejected"]
        state.last_error = error[:2000]
        state.save()
        return state.watermark
