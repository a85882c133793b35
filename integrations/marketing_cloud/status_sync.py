"""Subscriber statuses from Marketing Cloud: what ENS never sends.

ENS carries unsubscribes made through email links and replies only; statuses changed in
Marketing Cloud's UI, by an import or through its API, and addresses Marketing Cloud holds or
saw bounce, reach the hub here (shared reference §6). Each run reads, through SOAP, every
``Subscriber`` whose ``ModifiedDate`` is after the watermark less the overlap, page by page
(``ContinueRequest`` while the answer says ``MoreDataAvailable``), and hands the statuses to
``customers.consent.apply_source_statuses``: Unsubscribed is an opt-out of all marketing,
Held and Bounced mark the email contact point, each change with its history row.

Each business unit's All Subscribers is read with that unit's token (its MID), with a watermark
and last run of its own (one ``SubscriberStatusSync`` row per unit), and what it finds reaches
only the cross references of that unit (``CrossReference.business_unit``; blank is the default
unit): the same subscriber key in another unit is another unit's subscriber.

It runs on the reconciliation's interval (its own django-q2 schedule, every 15 minutes) and
in ``manage.py mc_reconcile``, after the data extension's rows. The watermark moves only when
every page was read; the same subscribers read again (the overlap) change nothing, since a
status is applied only when it is newer than the one applied for that subscriber.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from customers.consent import SourceStatus, apply_source_statuses
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.business_units import BusinessUnit
from integrations.marketing_cloud.client import unit_client
from integrations.marketing_cloud.models import SubscriberStatusSync
from integrations.marketing_cloud.subscriber_soap import SubscriberSoap, parse_soap_date
from integrations.queue import enqueue
from integrations.transport import PermanentError, TransportError

logger = logging.getLogger(__name__)

ACTOR = "mc-status-read"
STATUS_TASK = "integrations.marketing_cloud.status_sync.read_statuses_task"
STATUS_SCHEDULE_NAME = "Marketing Cloud subscriber statuses"
# A run stops after this many pages (2,500 subscribers each) and resumes at the next run.
MAX_PAGES = 200


@dataclass
class StatusRun:
    status: str  # "succeeded" or "failed"
    since: dt.datetime | None
    watermark: dt.datetime | None
    read: int = 0
    pages: int = 0
    applied: int = 0
    unchanged: int = 0
    unknown: int = 0
    skipped: int = 0  # results without a key, a status or a readable ModifiedDate
    error: str = ""

    def summary(self) -> str:
        if self.status == "failed":
            return f"status read failed: {self.error}"
        return (
            f"{self.read} subscribers in {self.pages} page(s): {self.applied} applied, "
            f"{self.unchanged} unchanged, {self.unknown} unknown"
        )


def _status_of(result: dict[str, str], scope: tuple[str, ...]) -> tuple[SourceStatus | None, dt.datetime | None]:
    key = result.get("SubscriberKey", "").strip()
    status = result.get("Status", "").strip()
    modified = parse_soap_date(result.get("ModifiedDate", ""))
    if status == "Unsubscribed":
        # When it happened, if the tenant says; else the last change of the subscriber.
        modified = parse_soap_date(result.get("UnsubscribedDate", "")) or modified
    if not key or not status or modified is None:
        return None, modified
    email = result.get("EmailAddress", "").strip()
    return SourceStatus(MARKETING_CLOUD, key[:255], status, modified, email, business_units=scope), modified


def read_statuses(client: Any = None, *, unit: BusinessUnit | None = None) -> StatusRun:
    """One status read of ``unit`` (default: the default unit): every subscriber changed since its
    watermark (less the overlap), read with its token and applied to its cross references only."""
    unit = unit or business_units.default_unit()
    scope = business_units.cross_reference_scope(unit)
    with transaction.atomic():
        SubscriberStatusSync.objects.get_or_create(business_unit=unit.state_key)
        # The row lock keeps two runs (schedule + mc_reconcile) from reading at once.
        state = SubscriberStatusSync.objects.select_for_update().get(business_unit=unit.state_key)
        state.last_started_at = timezone.now()
        state.last_status = "running"
        state.save()
    since = state.watermark - dt.timedelta(seconds=state.overlap_seconds) if state.watermark else None
    run = StatusRun("succeeded", since, state.watermark)
    high_water = state.watermark
    try:
        soap = SubscriberSoap(unit_client(unit, client))
        page = soap.retrieve_changed(since)
        while True:
            run.pages += 1
            run.read += len(page.results)
            statuses = []
            for result in page.results:
                status, modified = _status_of(result, scope)
                if modified is not None and (high_water is None or modified > high_water):
                    high_water = modified
                if status is None:
                    run.skipped += 1
                    continue
                statuses.append(status)
            outcome = apply_source_statuses(statuses, actor=ACTOR)
            run.applied += outcome.applied
            run.unchanged += outcome.unchanged + outcome.ignored
            run.unknown += outcome.unknown
            if not page.more:
                break
            if not page.request_id:
                raise PermanentError("SOAP Retrieve said MoreDataAvailable without a RequestID")
            if run.pages >= MAX_PAGES:
                # Applied pages stay applied; the watermark stays, so the next run reads them again.
                high_water = state.watermark
                break
            page = soap.retrieve_changed(None, continue_id=page.request_id)
    except TransportError as exc:
        run.status, run.error, run.watermark = "failed", exc.message, state.watermark
        _finish(state.pk, run, high_water=None)
        logger.warning(
            "subscriber status read of %s failed after %s page(s): %s",
            unit.name,
            run.pages,
            exc.http_status or "network",
        )
        return run
    run.watermark = _finish(state.pk, run, high_water=high_water)
    return run


def read_all_statuses(client: Any = None) -> list[tuple[BusinessUnit, StatusRun]]:
    """Every business unit's status read, the default unit first; one unit failing does not stop the others."""
    return [(unit, read_statuses(client, unit=unit)) for unit in business_units.units()]


def read_statuses_task() -> str:
    """django-q2 entry point (scheduled, or started by hand in the admin): every business unit's read."""
    runs = read_all_statuses()
    if len(runs) == 1:
        return runs[0][1].summary()
    return "; ".join(f"{unit.name}: {run.summary()}" for unit, run in runs)


def queue_status_read() -> str:
    return enqueue(STATUS_TASK, task_name="mc-status-read")


def _finish(state_pk: int, run: StatusRun, *, high_water: dt.datetime | None) -> dt.datetime | None:
    with transaction.atomic():
        state = SubscriberStatusSync.objects.select_for_update().get(pk=state_pk)
        if high_water is not None and (state.watermark is None or high_water > state.watermark):
            state.watermark = high_water
        state.last_finished_at = timezone.now()
        state.last_status = run.status
        state.last_read = run.read
        state.last_pages = run.pages
        state.last_applied = run.applied
        state.last_unchanged = run.unchanged
        state.last_unknown = run.unknown
        state.last_error = run.error[:2000]
        state.save()
        return state.watermark
