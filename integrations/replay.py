"""Steward operations on the sync machinery: re-sync a golden record, replay a dead letter.

Both run inside the caller's transaction and go through the normal, idempotent paths: a
re-sync marks the record's Marketing Cloud cross references pending for the batched
write-back; a replayed event goes back into the resolver's queue.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from customers.models import ChangeEvent, CrossReference, Individual
from customers.writeback_state import request_writeback
from integrations.choices import EventStatus, RunStatus, RunTrigger, StepOutcome
from integrations.marketing_cloud.writeback import queue_flush
from integrations.models import DeadLetter, InboundEvent, SyncRun
from integrations.resolver import WRITABLE_SYSTEMS, wake_resolver
from integrations.runs import downstream_step, enabled_targets, finish_run
from integrations.steps import StepLog


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
        log.add(*downstream_step(individual.master_id, change_event, enabled_targets()))
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
            log.add(*downstream_step(individual.master_id, change_event, enabled_targets()))
        log.save()
        request_writeback([xref.pk])
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
                request_writeback([xref.pk])
            queue_flush()
            if event is not None:
                event.status = EventStatus.WRITEBACK
                event.save(update_fields=["status"])
        elif event is not None:
            event.status = EventStatus.QUEUED
            event.attempts = 0
            event.reason = ""
            event.visible_at = timezone.now()
            event.claimed_by = ""
            event.save(update_fields=["status", "attempts", "reason", "visible_at", "claimed_by"])
            wake_resolver()
        dl.replayed_at = timezone.now()
        dl.replayed_by = actor[:120]
        dl.replay_run = new_run
        dl.save(update_fields=["replayed_at", "replayed_by", "replay_run"])
        return new_run
