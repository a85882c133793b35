"""The Customers process (use case 1c's orchestration) as django-q2 tasks.

``process_event``: find or create the golden record, link the cross reference and
decide whether Marketing Cloud needs the master ID, all in one transaction that
also queues the write-back (``integrations.marketing_cloud.writeback``, batched,
retried later, never by sleeping, when the failure is transient).

Both are idempotent: a task that runs twice (django-q2 redelivers after a crash or
an expired lease) finds its event or run already finished and does nothing.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction
from django.utils import timezone

from customers.actions import (
    apply_source_to_golden_record,
    find_golden_record,
    is_superseded,
    lock_identity,
    mark_writeback,
    publish_change,
    upsert_cross_reference,
)
from customers.choices import ChangeType, WritebackState
from customers.cim import CimValidationError, parse_individual
from customers.models import ChangeEvent, CrossReference, Individual
from customers.resolution import queue_suspect
from integrations.choices import MARKETING_CLOUD, EventStatus, RunStatus, RunTrigger, StepOutcome
from integrations.faults import fault_point
from integrations.marketing_cloud.writeback import flush_if_starved, queue_flush
from integrations.models import DeadLetter, InboundEvent, SyncRun
from integrations.queue import enqueue
from integrations.runs import dead_letter, finish_run, notify_downstream
from integrations.steps import StepLog
from integrations.transport import backoff_delay

logger = logging.getLogger(__name__)

PROCESS_TASK = "integrations.process.process_event"
PROCESS_MAX_ATTEMPTS = 5
WRITABLE_SYSTEMS = {MARKETING_CLOUD}


# ---------------------------------------------------------------------------
# Step 1-3: golden record and cross reference
# ---------------------------------------------------------------------------
def process_event(event_id: int) -> str:
    """django-q2 entry point for one stored event."""
    try:
        result = _process_event(event_id)
        fault_point("after-commit")
        flush_if_starved()
        return result
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
                "compared": match.compared,
                "masterId": match.individual.master_id if match.individual else None,
            }
            if match.decision:
                step.data["decision"] = match.decision
            if match.unknown_master_ids:
                step.data["unknownMasterIds"] = match.unknown_master_ids
        run.match_rule = match.rule
        fault_point("after-match")

        if is_superseded(match.cross_reference, event.occurred_at):
            log.add(
                "check order",
                StepOutcome.SKIPPED,
                "an event with a newer change for this record was already applied; nothing changed",
                {"eventChangedAt": event.occurred_at.isoformat() if event.occurred_at else None},
            )
            return finish_run(
                event,
                run,
                log,
                EventStatus.SUPERSEDED,
                RunStatus.SUPERSEDED,
                master_id=match.individual.master_id if match.individual else "",
            )

        with log.step("upsert golden record") as step:
            change = apply_source_to_golden_record(
                match.individual,
                source,
                system=system,
                actor=actor,
                external_id=external_id,
                changed_at=event.occurred_at,
            )
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
                match_rule=match.rule,
                match_detail=match.decision or {"rule": match.rule, "detail": match.detail},
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

        if match.suspects:
            with log.step("queue match candidates") as step:
                queued = [
                    candidate.pk
                    for pk, decision in match.suspects
                    if pk != individual.pk
                    and (candidate := queue_suspect(individual, pk, decision, actor=actor)) is not None
                ]
                step.detail = f"{len(queued)} possible match(es) queued for review"
                step.data = {"candidates": queued, "found": len(match.suspects)}

        change_event = None
        if (
            change.created
            or change.changed_fields
            or change.added_contact_points
            or xref_change.created
            or xref_change.moved_from
        ):
            change_event = publish_change(
                individual,
                change_type=ChangeType.CREATED if change.created else ChangeType.UPDATED,
                actor=actor,
                change={
                    "changedFields": change.changed_fields,
                    "addedContactPoints": change.added_contact_points,
                    "linked": {"system": system, "externalId": external_id} if xref_change.created else None,
                    "syncRunId": run.pk,
                    "source": system,
                },
            )
        notify_downstream(log, individual, change_event)

        needs_writeback = _needs_writeback(system, individual, carried)
        if needs_writeback:
            mark_writeback(xref, state=WritebackState.PENDING, actor=actor)
            queue_flush()
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
        return finish_run(event, run, log, EventStatus.SYNCED, RunStatus.SUCCEEDED, master_id=individual.master_id)


def _needs_writeback(system: str, individual: Individual, carried: list[str]) -> bool:
    # The event is Marketing Cloud's own word on what it holds: write when it lacked
    # the master ID or carried another one, whatever we wrote before (a row can be
    # reloaded or edited in Marketing Cloud behind our back).
    return system in WRITABLE_SYSTEMS and individual.master_id not in carried


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
            dead_letter(event, run, stage="process", reason=message)
            return finish_run(event, run, log, EventStatus.DEAD, RunStatus.DEAD, error=message)
        delay = backoff_delay(event.attempts, base=5.0, cap=600.0)
        log.add("process event", StepOutcome.RETRY, f"{message}; retry in {delay:.0f}s")
        enqueue(PROCESS_TASK, event.pk, delay=delay, task_name=f"process-event-{event.pk}-retry-{event.attempts}")
        run.next_attempt_at = timezone.now() + dt.timedelta(seconds=delay)
        finish_run(None, run, log, "", RunStatus.FAILED, error=message)
        event.status = EventStatus.RETRYING
        event.reason = message
        event.save()
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
    change_event = ChangeEvent.objects.filter(master_id=individual.master_id).order_by("-id").first()
    if not xrefs:
        run = SyncRun.objects.create(trigger=RunTrigger.RESYNC, master_id=individual.master_id, actor=actor)
        log = StepLog(run)
        log.add("re-sync requested", StepOutcome.OK, f"by {actor}")
        notify_downstream(log, individual, change_event)
        log.add("write back master ID", StepOutcome.SKIPPED, "no Marketing Cloud cross reference")
        finish_run(None, run, log, "", RunStatus.SUCCEEDED, master_id=individual.master_id)
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
        if xref is xrefs[0]:
            notify_downstream(log, individual, change_event)
        log.save()
        mark_writeback(xref, state=WritebackState.PENDING, actor=f"sync-run:{run.pk}")
        queue_flush()
        runs.append(run)
    return runs


def replay_dead_letter(letter: DeadLetter, *, actor: str) -> SyncRun | None:
    """Send a dead letter through the normal, idempotent path again."""
    with transaction.atomic():
        dl = DeadLetter.objects.select_for_update().get(pk=letter.pk)
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
            xref = (
                CrossReference.objects.select_for_update()
                .filter(system=dl.run.system, external_id=dl.run.external_id)
                .first()
            )
            if xref is not None:
                mark_writeback(xref, state=WritebackState.PENDING, actor=f"sync-run:{new_run.pk}")
            queue_flush()
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
