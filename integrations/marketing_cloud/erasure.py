"""GDPR erasure in Marketing Cloud itself: the contacts delete operation, by contact key.

Off unless ``MC_ERASE_CONTACTS`` is true: without it an erasure clears only the master ID the
data extension holds (the write-back). With it, each erased Marketing Cloud contact key gets a
``ContactDeletion`` row, and a task sends the due ones in one call:

``POST /contacts/v1/contacts/actions/delete?type=keys`` with ``{"values": [...],
"DeleteOperationType": "ContactAndAttributes"}`` (Salesforce's "DeleteByContactKeys"
reference). Marketing Cloud queues the deletion and answers ``operationInitiated`` and an
``operationID``; the operation runs for hours (first suppression, then deletion). Its status
is read from ``GET /contacts/v1/contacts/actions/delete/status?operationID=`` ("ContactsDeleteStatus"
reference): ``operation.status``, and in the delete phase
``backgroundOperationsSummary.backgroundOperationStatusID``, whose Completed, Aborted and
Invalid are final; anything else is still processing.

A Marketing Cloud Contact Key is the Subscriber Key of the email channel, which is the hub's
external ID for Marketing Cloud records.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.dispatch import receiver
from django.utils import timezone

from customers.models import CrossReference
from customers.signals import individual_erased
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.business_units import BusinessUnit
from integrations.marketing_cloud.client import unit_client
from integrations.marketing_cloud.models import ContactDeletion
from integrations.queue import enqueue_once, enqueue_wake_up, task_started, wake_up_started
from integrations.transport import PermanentError, TransportError, backoff_delay

logger = logging.getLogger(__name__)

TASK = "integrations.marketing_cloud.erasure.process_contact_deletions"
FLAG = "mc-contact-deletions"
WAKE_UP = "mc-contact-deletions-later"
DELETE_PATH = "/contacts/v1/contacts/actions/delete?type=keys"
STATUS_PATH = "/contacts/v1/contacts/actions/delete/status?operationID={}"
# Keys per delete call: Marketing Cloud runs one deletion at a time, so fewer, larger calls.
BATCH_SIZE = 100
FIRST_POLL_SECONDS = 60.0
MAX_POLL_SECONDS = 3600.0
FINAL_OK = "Completed"
FINAL_FAILED = frozenset({"Aborted", "Invalid", "Failed", "Cancelled"})


@receiver(individual_erased)
def delete_contacts_on_erasure(
    sender: Any, individual: Any, source_records: list[tuple[str, str]], actor: str, **kwargs: Any
) -> None:
    """In the erasure's transaction: a pending deletion per Marketing Cloud contact key, when enabled."""
    if not settings.MC_ERASE_CONTACTS:
        return
    keys = sorted(
        CrossReference.objects.filter(individual=individual, system=MARKETING_CLOUD).values_list(
            "external_id", "business_unit"
        )
    )
    if not keys:
        return
    now = timezone.now()
    for key, unit in keys:
        ContactDeletion.objects.update_or_create(
            contact_key=key,
            defaults={
                "individual": individual,
                "business_unit": unit,
                "state": ContactDeletion.PENDING,
                "requested_at": now,
                "due_at": now,
                "attempts": 0,
                "operation_id": None,
                "operation_status": "",
                "next_poll_at": None,
                "accepted_at": None,
                "completed_at": None,
                "last_error": "",
            },
        )
    enqueue_once(TASK, flag=FLAG)


def process_contact_deletions(client: Any = None, *, from_queue: bool = True) -> str:
    """django-q2 entry point: send the due deletions, poll the accepted ones, queue the next run."""
    if from_queue:
        task_started(FLAG)
        wake_up_started(WAKE_UP)
    sent = _send_due(client)
    polled = _poll_due(client)
    _queue_next()
    return f"{sent} sent, {polled} polled"


def _send_due(client: Any) -> int:
    with transaction.atomic():
        rows = list(
            ContactDeletion.objects.filter(state=ContactDeletion.PENDING)
            .filter(Q(due_at__lte=timezone.now()) | Q(due_at__isnull=True))
            .select_for_update(skip_locked=True)
            .order_by("due_at", "id")[:BATCH_SIZE]
        )
        # Each contact is deleted through its own business unit, with that unit's token.
        for mid, unit, group in business_units.group_by_unit(rows, lambda row: row.business_unit):
            _send_unit(client, mid, unit, group)
        return len(rows)


def _send_unit(client: Any, mid: str, unit: BusinessUnit | None, rows: list[ContactDeletion]) -> None:
    now = timezone.now()
    for row in rows:
        row.attempts += 1
    try:
        if unit is None:
            raise PermanentError(business_units.not_configured(mid))
        body = unit_client(unit, client).request(
            "POST",
            DELETE_PATH,
            json={"values": [r.contact_key for r in rows], "DeleteOperationType": "ContactAndAttributes"},
        )
    except TransportError as exc:
        for row in rows:
            row.last_error = exc.message[:2000]
            if exc.permanent or row.attempts >= settings.WRITEBACK_MAX_ATTEMPTS:
                row.state, row.due_at = ContactDeletion.FAILED, None
            else:
                delay = backoff_delay(row.attempts, base=2.0, cap=300.0, floor=exc.retry_after or 0.0)
                row.due_at = now + dt.timedelta(seconds=delay)
        ContactDeletion.objects.bulk_update(rows, ["state", "due_at", "attempts", "last_error"])
        logger.warning("contact deletion call failed (status %s)", exc.http_status or "network")
        return
    body = body if isinstance(body, dict) else {}
    operation_id = body.get("operationID")
    started = body.get("operationInitiated") is True and isinstance(operation_id, int) and not body.get("hasErrors")
    messages = "; ".join(str(m)[:200] for m in (body.get("resultMessages") or [])[:5])
    for row in rows:
        row.due_at = None
        if started:
            row.state, row.operation_id, row.accepted_at = ContactDeletion.ACCEPTED, operation_id, now
            row.next_poll_at, row.last_error = now + dt.timedelta(seconds=FIRST_POLL_SECONDS), ""
        else:
            row.state = ContactDeletion.FAILED
            row.last_error = f"Marketing Cloud did not start the deletion: {messages or 'no operationID'}"[:2000]
    ContactDeletion.objects.bulk_update(
        rows, ["state", "due_at", "attempts", "operation_id", "accepted_at", "next_poll_at", "last_error"]
    )


def _operation_status(body: Any) -> str:
    """The status that decides: the delete phase's backgroundOperationStatusID, else operation.status."""
    if not isinstance(body, dict):
        return ""
    summary = body.get("backgroundOperationsSummary")
    if isinstance(summary, dict) and summary.get("backgroundOperationStatusID"):
        return str(summary["backgroundOperationStatusID"])[:40]
    operation = body.get("operation")
    return str(operation.get("status") or "")[:40] if isinstance(operation, dict) else ""


def _poll_due(client: Any) -> int:
    with transaction.atomic():
        rows = list(
            ContactDeletion.objects.filter(
                state=ContactDeletion.ACCEPTED, completed_at__isnull=True, next_poll_at__lte=timezone.now()
            ).select_for_update(skip_locked=True)[:500]
        )
        by_operation: dict[int, list[ContactDeletion]] = defaultdict(list)
        for row in rows:
            if row.operation_id is not None:
                by_operation[row.operation_id].append(row)
        now = timezone.now()
        for operation_id, group in by_operation.items():
            try:
                unit = business_units.unit_for_mid(group[0].business_unit)
                if unit is None:
                    raise PermanentError(business_units.not_configured(group[0].business_unit))
                answer = unit_client(unit, client).request("GET", STATUS_PATH.format(operation_id))
                status = _operation_status(answer)
                error = ""
            except TransportError as exc:
                status, error = "", exc.message[:2000]
            for row in group:
                waited = (now - (row.accepted_at or now)).total_seconds()
                row.next_poll_at = now + dt.timedelta(seconds=min(MAX_POLL_SECONDS, max(FIRST_POLL_SECONDS, waited)))
                row.last_error = error
                if status:
                    row.operation_status = status
                if status == FINAL_OK:
                    row.completed_at, row.next_poll_at = now, None
                elif status in FINAL_FAILED:
                    row.state, row.next_poll_at = ContactDeletion.FAILED, None
                    row.last_error = f"the deletion operation ended {status}"
        ContactDeletion.objects.bulk_update(
            rows, ["state", "operation_status", "next_poll_at", "completed_at", "last_error"]
        )
        return len(by_operation)


def _queue_next() -> None:
    times = ContactDeletion.objects.aggregate(
        due=Min("due_at", filter=Q(state=ContactDeletion.PENDING)),
        poll=Min("next_poll_at", filter=Q(state=ContactDeletion.ACCEPTED, completed_at__isnull=True)),
    )
    upcoming = [t for t in times.values() if t is not None]
    if not upcoming:
        return
    with transaction.atomic():
        delay = max(0.0, (min(upcoming) - timezone.now()).total_seconds())
        if delay > 0:
            enqueue_wake_up(TASK, flag=WAKE_UP, delay=delay)
        else:
            enqueue_once(TASK, flag=FLAG)


def retry(rows: Any) -> int:
    """A steward's retry of failed deletions: pending again, due now."""
    with transaction.atomic():
        count = rows.filter(state=ContactDeletion.FAILED).update(
            state=ContactDeletion.PENDING, due_at=timezone.now(), attempts=0, operation_id=None, operation_status=""
        )
        if count:
            enqueue_once(TASK, flag=FLAG)
    return count
