"""Finishing sync runs: the bookkeeping shared by the process and the connectors."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from integrations.choices import StepOutcome
from integrations.downstream.models import DownstreamTarget
from integrations.models import InboundEvent, SyncRun
from integrations.steps import StepLog


def event_snapshot(event: InboundEvent) -> dict[str, Any]:
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


DOWNSTREAM_STEP = "notify downstream systems"


def enabled_targets() -> list[DownstreamTarget]:
    return list(DownstreamTarget.objects.filter(enabled=True))


def downstream_step(
    master_id: str, change_event: Any, targets: Sequence[DownstreamTarget]
) -> tuple[str, str, str, dict[str, Any]]:
    """The step log's line about downstream systems: (name, outcome, detail, data).

    It only reports. The change event (the outbox row) was written with the change, in its
    transaction, which also queued the fan-out (``integrations.downstream.receivers``); the
    fan-out makes one delivery per enabled target that wants the change's type.
    """
    if change_event is None:
        return DOWNSTREAM_STEP, StepOutcome.SKIPPED, "the golden record did not change", {"masterId": master_id}
    wanting = sum(1 for target in targets if target.wants(change_event.change_type))
    if wanting:
        detail = f"change event {change_event.pk} ({change_event.change_type}) queued for {wanting} target(s)"
    elif targets:
        detail = f"change event {change_event.pk} recorded; no enabled target wants {change_event.change_type}"
    else:
        detail = f"change event {change_event.pk} recorded; no downstream targets enabled"
    data = {"masterId": master_id, "changeEventId": change_event.pk, "targets": wanting}
    return DOWNSTREAM_STEP, StepOutcome.OK if wanting else StepOutcome.SKIPPED, detail, data


def finish_run(
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
