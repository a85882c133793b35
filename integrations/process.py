"""The Customers process (use case 1c's orchestration) as django-q2 tasks.

``process_event``: find or create the golden record, link the cross reference and
decide whether Marketing Cloud needs the master ID, all in one transaction that
also queues the write-back. ``write_back``: the Marketing Cloud call, outside any
long transaction, retried later (never by sleeping) when the failure is transient.

Both are idempotent: a task that runs twice (django-q2 redelivers after a crash or
an expired lease) finds its event or run already finished and does nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from customers.actions import (
    apply_source_to_golden_record,
    find_golden_record,
    is_superseded,
    lock_identity,
    mark_writeback,
    upsert_cross_reference,
)
from customers.choices import WritebackState
from customers.cim import CimValidationError, parse_individual
from customers.models import CrossReference, Individual
from integrations.choices import MARKETING_CLOUD, EventStatus, RunStatus, RunTrigger, StepOutcome
from integrations.models import DeadLetter, InboundEvent, SyncRun
from integrations.queue import enqueue
from integrations.steps import StepLog
from integrations.transport import TransportError, backoff_delay

logger = logging.getLogger(__name__)

PROCESS_TASK = "integrations.process.process_event"
WRITEBACK_TASK = "integrations.process.write_back"
PROCESS_MAX_ATTEMPTS = 5
WRITABLE_SYSTEMS = {MARKETING_CLOUD}


def _event_snapshot(event: InboundEvent) -> dict[str, Any]:
    """The original event, kept whole with a dead letter so it can be inspected and replayed."""
    raw = bytes(event.raw_body or b"")
    return {
        "eventId": event.pk,
        "channel": event.channel,
        "system": event.system,
        "externalId": event.external_id,
        "idempotencyKey": event.idempotency_key,
        "receivedAt": event.received_at.isoformat() if event.received_at else None,
        "occurredAt": event.occurred_at.isoformat() if event.occurred_at else None,
        "headers": event.headers,
        "rawBodyBase64": base64.b64encode(raw).decode(),
        "individual": event.individual_cim,
    }


# ---------------------------------------------------------------------------
# Step 1-3: golden record and cross reference
# ---------------------------------------------------------------------------
def process_event(event_id: int) -> str:
    """django-q2 entry point for one stored event."""
    try:
        return _process_event(event_id)
    except Exception as exc:  # recorded, then retried by us with backoff (never left to silently loop)
        logger.warning("event %s processing failed: %s", event_id, type(exc).__name__)
        return _record_process_failure(event_id, exc)


def _process_event(event_id: int) -> str:
    with transaction.atomic():
        event = InboundEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None:
            return "missing"
        if event.status not in (EventStatus.QUEUED, EventStatus.RETRYING):
            return f"already {event.status}"
        event.attempts += 1
        run = SyncRun.objects.create(
            event=event,
            trigger=RunTrigger.EVENT,
            system=event.system,
            external_id=event.external_id,
            actor="customers-process",
        )
        actor = f"sync-run:{run.pk}"
        log = StepLog(run)
        source = parse_individual(event.individual_cim or {})
        system, external_id = event.system, event.external_id

        with log.step("find golden record") as step:
            locked = lock_identity(system=system, external_id=external_id, source=source)
            match = find_golden_record(system=system, external_id=external_id, source=source)
            step.detail = f"rule {match.rule}: {match.detail}"
            step.data = {
                "rule": match.rule,
                "locks": len(locked),
                "masterId": match.individual.master_id if match.individual else None,
            }
            if match.unknown_master_ids:
                step.data["unknownMasterIds"] = match.unknown_master_ids
        run.match_rule = match.rule

        if is_superseded(match.cross_reference, event.occurred_at):
            log.add(
                "check order",
                StepOutcome.SKIPPED,
                "an event with a newer change for this record was already applied; nothing changed",
                {"eventChangedAt": event.occurred_at.isoformat() if event.occurred_at else None},
            )
            return _finish(
                event,
                run,
                log,
                EventStatus.SUPERSEDED,
                RunStatus.SUPERSEDED,
                master_id=match.individual.master_id if match.individual else "",
            )

        with log.step("upsert golden record") as step:
            change = apply_source_to_golden_record(match.individual, source, system=system, actor=actor)
            individual = change.individual
            step.detail = ("created" if change.created else "updated" if change.changed_fields else "unchanged") + (
                f" {individual.master_id}"
            )
            step.data = {
                "masterId": individual.master_id,
                "created": change.created,
                "changedFields": change.changed_fields,
                "addedContactPoints": change.added_contact_points,
            }
        run.master_id = individual.master_id
        event.master_id = individual.master_id

        carried = source.master_ids
        with log.step("upsert cross reference") as step:
            xref_change = upsert_cross_reference(
                individual,
                system=system,
                external_id=external_id,
                source=source,
                source_status=str(source.raw.get("subscriberStatus") or ""),
                source_modified_at=event.occurred_at,
                carried_master_id=carried[0] if carried else "",
                actor=actor,
            )
            xref = xref_change.cross_reference
            step.detail = f"{'linked' if xref_change.created else 'updated'} {system} cross reference {xref.pk}"
            if xref_change.moved_from:
                step.detail += f" (moved from {xref_change.moved_from})"
            step.data = {
                "crossReferenceId": xref.pk,
                "created": xref_change.created,
                "movedFrom": xref_change.moved_from,
            }

        needs_writeback = _needs_writeback(system, individual, carried)
        if needs_writeback:
            mark_writeback(xref, state=WritebackState.PENDING, actor=actor)
            enqueue(WRITEBACK_TASK, run.pk, task_name=f"write-back-run-{run.pk}")
            log.add(
                "write back master ID",
                StepOutcome.OK,
                "queued",
                {"reason": "event carried another master ID" if carried else "event carried no master ID"},
            )
            event.status = EventStatus.WRITEBACK
            run.status = RunStatus.WAITING
            log.save()
            event.save()
            run.save()
            return "write-back queued"
        if system in WRITABLE_SYSTEMS:
            reason = "the event carried this master ID: Marketing Cloud already holds it"
            if xref.writeback_state != WritebackState.WRITTEN:
                mark_writeback(xref, state=WritebackState.NOT_NEEDED, actor=actor)
        else:
            reason = f"no write-back connector for {system}"
        log.add("write back master ID", StepOutcome.SKIPPED, reason)
        _notify_downstream(log, individual)
        return _finish(event, run, log, EventStatus.SYNCED, RunStatus.SUCCEEDED, master_id=individual.master_id)


def _needs_writeback(system: str, individual: Individual, carried: list[str]) -> bool:
    # The event is Marketing Cloud's own word on what it holds: write when it lacked
    # the master ID or carried another one, whatever we wrote before (a row can be
    # reloaded or edited in Marketing Cloud behind our back).
    return system in WRITABLE_SYSTEMS and individual.master_id not in carried


def _notify_downstream(log: StepLog, individual: Individual) -> None:
    # Outbound connectors to other systems (webhooks, Salesforce core) subscribe here
    # once configured; until then the step says so rather than pretending.
    log.add(
        "notify downstream systems",
        StepOutcome.SKIPPED,
        "no downstream targets configured",
        {"masterId": individual.master_id},
    )


def _finish(
    event: InboundEvent | None,
    run: SyncRun,
    log: StepLog,
    event_status: str,
    run_status: str,
    *,
    master_id: str = "",
    error: str = "",
) -> str:
    now = timezone.now()
    run.status = run_status
    run.finished_at = now
    run.next_attempt_at = None
    if master_id:
        run.master_id = master_id
    if error:
        run.last_error = error[:4000]
    log.save()
    run.save()
    if event is not None:
        event.status = event_status
        event.processed_at = now
        if master_id:
            event.master_id = master_id
        if error:
            event.reason = error[:4000]
        event.save()
    return event_status


def _record_process_failure(event_id: int, exc: Exception) -> str:
    permanent = isinstance(exc, CimValidationError)
    with transaction.atomic():
        event = InboundEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None or event.status not in (EventStatus.QUEUED, EventStatus.RETRYING):
            return "nothing to record"
        event.attempts += 1  # the failed attempt's own increment was rolled back with it
        run = SyncRun.objects.create(
            event=event,
            trigger=RunTrigger.EVENT,
            system=event.system,
            external_id=event.external_id,
            actor="customers-process",
        )
        log = StepLog(run)
        message = f"{type(exc).__name__}: {exc}"[:2000]
        if permanent or event.attempts >= PROCESS_MAX_ATTEMPTS:
            log.add("process event", StepOutcome.FAILED, message)
            _dead_letter(event, run, stage="process", reason=message)
            return _finish(event, run, log, EventStatus.DEAD, RunStatus.DEAD, error=message)
        delay = backoff_delay(event.attempts, base=5.0, cap=600.0)
        log.add("process event", StepOutcome.RETRY, f"{message}; retry in {delay:.0f}s")
        enqueue(PROCESS_TASK, event.pk, delay=delay, task_name=f"process-event-{event.pk}-retry-{event.attempts}")
        run.next_attempt_at = timezone.now() + dt.timedelta(seconds=delay)
        _finish(None, run, log, "", RunStatus.FAILED, error=message)
        event.status = EventStatus.RETRYING
        event.reason = message
        event.save()
        return "retry scheduled"


def _dead_letter(
    event: InboundEvent | None,
    run: SyncRun,
    *,
    stage: str,
    reason: str,
    http_status: int | None = None,
    error_code: str = "",
) -> DeadLetter:
    return DeadLetter.objects.create(
        event=event,
        run=run,
        stage=stage,
        reason=reason[:4000],
        http_status=http_status,
        error_code=error_code[:20],
        original_event=_event_snapshot(event) if event else {},
    )


# ---------------------------------------------------------------------------
# Step 4: write the master ID back to Marketing Cloud
# ---------------------------------------------------------------------------
def write_back(run_id: int, client: Any = None) -> str:
    """django-q2 entry point: upsert the master ID into the Marketing Cloud data extension."""
    from integrations.marketing_cloud.client import MarketingCloudClient

    with transaction.atomic():
        # The run's row lock keeps a redelivered copy of this task from calling in parallel.
        run = SyncRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status not in (RunStatus.RUNNING, RunStatus.WAITING):
            return "nothing to do"
        event = InboundEvent.objects.select_for_update().filter(pk=run.event_id).first() if run.event_id else None
        log = StepLog(run)
        xref = (
            CrossReference.objects.select_for_update()
            .select_related("individual")
            .filter(system=run.system, external_id=run.external_id)
            .first()
        )
        if xref is None:
            log.add("write back master ID", StepOutcome.FAILED, "cross reference no longer exists")
            return _finish(event, run, log, EventStatus.DEAD, RunStatus.DEAD, error="cross reference missing")
        master_id = xref.individual.master_id  # the current one, should the record have changed since
        run.master_id = master_id
        written_since_run_began = (
            xref.writeback_state == WritebackState.WRITTEN
            and xref.source_master_id == master_id
            and xref.written_at is not None
            and xref.written_at >= run.started_at
        )
        if run.trigger != RunTrigger.RESYNC and written_since_run_began:
            # Another run wrote this very master ID after our event was observed.
            log.add(
                "write back master ID",
                StepOutcome.SKIPPED,
                "Marketing Cloud already holds this master ID (written by a later run)",
            )
            _notify_downstream(log, xref.individual)
            return _finish(event, run, log, EventStatus.SYNCED, RunStatus.SUCCEEDED, master_id=master_id)

        attempt = run.writeback_attempts + 1
        run.writeback_attempts = attempt
        started = timezone.now()
        actor = f"sync-run:{run.pk}"
        de_key, pk_name, field = settings.MC_DE_KEY, settings.MC_DE_PRIMARY_KEY, settings.MC_MASTER_ID_FIELD
        target = f"PUT data extension {de_key} row of cross reference {xref.pk}"
        try:
            client = client or MarketingCloudClient.from_settings()
            client.upsert_row(de_key, pk_name, xref.external_id, {field: master_id})
        except TransportError as exc:
            return _writeback_failed(run, event, xref, log, exc, attempt=attempt, started=started, actor=actor)
        mark_writeback(xref, state=WritebackState.WRITTEN, master_id=master_id, actor=actor)
        log.add(
            "write back master ID",
            StepOutcome.OK,
            f"{target}: {field} written (attempt {attempt})",
            {"attempt": attempt, "masterId": master_id, "dataExtension": de_key},
            started=started,
        )
        _notify_downstream(log, xref.individual)
        return _finish(event, run, log, EventStatus.SYNCED, RunStatus.SUCCEEDED, master_id=master_id)


def _writeback_failed(
    run: SyncRun,
    event: InboundEvent | None,
    xref: CrossReference,
    log: StepLog,
    exc: TransportError,
    *,
    attempt: int,
    started: Any,
    actor: str,
) -> str:
    data = {
        "attempt": attempt,
        "httpStatus": exc.http_status,
        "errorCode": exc.error_code,
        "retryAfter": exc.retry_after,
    }
    max_attempts = settings.WRITEBACK_MAX_ATTEMPTS
    if exc.permanent or attempt >= max_attempts:
        why = "permanent failure" if exc.permanent else f"gave up after {attempt} attempts"
        reason = f"{why}: {exc.message}"
        log.add("write back master ID", StepOutcome.FAILED, reason, data, started=started)
        mark_writeback(xref, state=WritebackState.FAILED, error=exc.message, actor=actor)
        _dead_letter(
            event, run, stage="writeback", reason=reason, http_status=exc.http_status, error_code=exc.error_code
        )
        logger.warning(
            "run %s write-back dead-lettered (status %s, errorcode %s)", run.pk, exc.http_status, exc.error_code or "-"
        )
        return _finish(event, run, log, EventStatus.DEAD, RunStatus.DEAD, error=reason)
    delay = backoff_delay(attempt, base=2.0, cap=300.0, floor=exc.retry_after or 0.0)
    log.add(
        "write back master ID",
        StepOutcome.RETRY,
        f"{exc.message}; retry {attempt + 1} in {delay:.1f}s",
        {**data, "delay": round(delay, 3)},
        started=started,
    )
    enqueue(WRITEBACK_TASK, run.pk, delay=delay, task_name=f"write-back-run-{run.pk}-attempt-{attempt + 1}")
    run.status = RunStatus.WAITING
    run.next_attempt_at = timezone.now() + dt.timedelta(seconds=delay)
    run.last_error = exc.message[:4000]
    log.save()
    run.save()
    return "retry scheduled"


# ---------------------------------------------------------------------------
# Steward operations: re-sync and replay
# ---------------------------------------------------------------------------
def start_resync(individual: Individual, *, actor: str) -> list[SyncRun]:
    """Write the record's master ID to every Marketing Cloud cross reference again, now.

    Runs inside the caller's transaction; the runs and their queued tasks commit with it.
    """
    runs: list[SyncRun] = []
    xrefs = list(individual.cross_references.filter(system__in=WRITABLE_SYSTEMS))
    if not xrefs:
        run = SyncRun.objects.create(trigger=RunTrigger.RESYNC, master_id=individual.master_id, actor=actor)
        log = StepLog(run)
        log.add("re-sync requested", StepOutcome.OK, f"by {actor}")
        log.add("write back master ID", StepOutcome.SKIPPED, "no Marketing Cloud cross reference")
        _notify_downstream(log, individual)
        _finish(None, run, log, "", RunStatus.SUCCEEDED, master_id=individual.master_id)
        return [run]
    for xref in xrefs:
        run = SyncRun.objects.create(
            trigger=RunTrigger.RESYNC,
            system=xref.system,
            external_id=xref.external_id,
            master_id=individual.master_id,
            status=RunStatus.WAITING,
            actor=actor,
        )
        log = StepLog(run)
        log.add("re-sync requested", StepOutcome.OK, f"by {actor}", {"crossReferenceId": xref.pk})
        log.save()
        mark_writeback(xref, state=WritebackState.PENDING, actor=f"sync-run:{run.pk}")
        enqueue(WRITEBACK_TASK, run.pk, task_name=f"write-back-run-{run.pk}")
        runs.append(run)
    return runs


def replay_dead_letter(dead_letter: DeadLetter, *, actor: str) -> SyncRun | None:
    """Send a dead letter through the normal, idempotent path again."""
    with transaction.atomic():
        dl = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
        if dl.replayed_at is not None:
            return dl.replay_run
        event = InboundEvent.objects.select_for_update().filter(pk=dl.event_id).first() if dl.event_id else None
        new_run: SyncRun | None = None
        if dl.stage == "writeback":
            new_run = SyncRun.objects.create(
                event=event,
                trigger=RunTrigger.REPLAY,
                system=dl.run.system,
                external_id=dl.run.external_id,
                master_id=dl.run.master_id,
                status=RunStatus.WAITING,
                actor=actor,
            )
            log = StepLog(new_run)
            log.add("replay dead letter", StepOutcome.OK, f"dead letter {dl.pk} by {actor}")
            log.save()
            enqueue(WRITEBACK_TASK, new_run.pk, task_name=f"write-back-run-{new_run.pk}")
            if event is not None:
                event.status = EventStatus.WRITEBACK
                event.save(update_fields=["status"])
        elif event is not None:
            event.status = EventStatus.QUEUED
            event.attempts = 0
            event.reason = ""
            event.save(update_fields=["status", "attempts", "reason"])
            enqueue(PROCESS_TASK, event.pk, task_name=f"process-event-{event.pk}-replay")
        dl.replayed_at = timezone.now()
        dl.replayed_by = actor[:120]
        dl.replay_run = new_run
        dl.save(update_fields=["replayed_at", "replayed_by", "replay_run"])
        return new_run
