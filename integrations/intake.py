"""Storing inbound events: accepted ones with their queued task, in one transaction.

The queue row (django-q2's ORM broker) is written through the same connection as
the event row, so the HTTP 200 is sent only after both are durable, and a failure
leaves neither behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from integrations.choices import EventChannel, EventStatus
from integrations.faults import fault_point
from integrations.models import ApiClient, InboundEvent
from integrations.queue import enqueue

PROCESS_TASK = "integrations.process.process_event"

# Request headers worth keeping with the raw event (never Authorization or cookies).
KEPT_HEADERS = (
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTP_USER_AGENT",
    "HTTP_X_REQUEST_ID",
    "HTTP_X_FORWARDED_FOR",
    "REMOTE_ADDR",
)


def json_safe(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL: keep the evidence as U+FFFD instead."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def request_headers(meta: dict[str, Any]) -> dict[str, str]:
    return {key: str(meta[key])[:500] for key in KEPT_HEADERS if key in meta}


@dataclass
class AcceptedEvent:
    """An event to store: the raw request plus what intake derived from it."""

    channel: str
    system: str
    external_id: str
    idempotency_key: str
    raw_body: bytes
    headers: dict[str, str]
    content_type: str
    payload: Any
    individual_cim: dict[str, Any]
    occurred_at: dt.datetime | None = None
    api_client: ApiClient | None = None

    def to_model(self) -> InboundEvent:
        return InboundEvent(
            channel=self.channel,
            system=self.system,
            external_id=json_safe(self.external_id[:255]),
            idempotency_key=json_safe(self.idempotency_key[:200]),
            status=EventStatus.QUEUED,
            occurred_at=self.occurred_at,
            content_type=self.content_type[:100],
            headers=json_safe(self.headers),
            raw_body=self.raw_body,
            payload=json_safe(self.payload),
            individual_cim=json_safe(self.individual_cim),
            api_client=self.api_client,
        )


def store_events(events: list[AcceptedEvent]) -> list[tuple[InboundEvent, bool]]:
    """Store events and queue each new one; returns (event, is_duplicate) in input order.

    All or nothing: runs in one transaction. Duplicates (same idempotency key, in
    this batch or stored before) are answered with the first copy and queue nothing.
    """
    with transaction.atomic():
        keys = [json_safe(e.idempotency_key[:200]) for e in events]
        existing = {ev.idempotency_key: ev for ev in InboundEvent.objects.filter(idempotency_key__in=keys)}
        fresh: dict[str, InboundEvent] = {}
        for event in events:
            key = json_safe(event.idempotency_key[:200])
            if key not in existing and key not in fresh:
                fresh[key] = event.to_model()
        if fresh:
            # A concurrent delivery of the same key makes this insert wait, then skip the row.
            InboundEvent.objects.bulk_create(list(fresh.values()), ignore_conflicts=True)
            fault_point("intake-mid-batch")
            stored = {ev.idempotency_key: ev for ev in InboundEvent.objects.filter(idempotency_key__in=list(fresh))}
            for key, model in stored.items():
                # Enqueue only the rows this transaction inserted (same received_at as our model).
                if fresh[key].received_at == model.received_at:
                    enqueue(PROCESS_TASK, model.pk, task_name=f"process-event-{model.pk}")
                    fresh[key] = model
                else:
                    existing[key] = model
                    del fresh[key]
        result: list[tuple[InboundEvent, bool]] = []
        seen: set[str] = set()
        for key in keys:
            if key in fresh and key not in seen:
                result.append((fresh[key], False))
            else:
                result.append((fresh.get(key) or existing[key], True))
            seen.add(key)
        return result


def store_rejected(
    *,
    channel: str,
    raw_body: bytes,
    headers: dict[str, str],
    content_type: str,
    reason: str,
    system: str = "",
    external_id: str = "",
    payload: Any = None,
    api_client: ApiClient | None = None,
) -> InboundEvent:
    """Keep a refused event with its reason; the same bytes refused twice are kept once."""
    digest = hashlib.sha256(raw_body).hexdigest()
    event, _ = InboundEvent.objects.get_or_create(
        idempotency_key=f"rejected:{channel}:{digest}",
        defaults={
            "channel": channel,
            "system": system,
            "external_id": json_safe(external_id[:255]),
            "status": EventStatus.REJECTED,
            "reason": json_safe(reason[:4000]),
            "content_type": content_type[:100],
            "headers": json_safe(headers),
            "raw_body": raw_body,
            "payload": json_safe(payload),
            "api_client": api_client,
        },
    )
    return event


__all__ = ["AcceptedEvent", "EventChannel", "request_headers", "store_events", "store_rejected"]
