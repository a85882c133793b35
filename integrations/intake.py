"""Storing inbound events: the minimum durable work, then the answer.

The channels that store here: Journey Builder's execute call, the events API and the
reconciliation poller. (ENS batches are stored as ``EnsNotification`` rows by
``integrations.marketing_cloud.ens``; a backfill applies its rows through the engine directly.)

An accepted event is one row of ``InboundEvent``, and that row is its queue entry (see
``integrations.resolver``): storing one event or a batch is one SQL statement that inserts
the new rows (a repeated idempotency key inserts nothing), and, when the resolver is not
already asked to run, flips its wake-up flag and queues its django-q2 task. In autocommit
that one statement is its own transaction, so the HTTP 200 goes out only after the rows
are durable, and a failure leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from hub.sql import execute
from integrations.choices import EventChannel, EventStatus
from integrations.faults import armed, fault_point
from integrations.models import ApiClient, InboundEvent, QueuedFlag
from integrations.queue import broker_key, enqueue_once, task_package
from integrations.resolver import RESOLVE_TASK, RESOLVER_FLAG

logger = logging.getLogger(__name__)

# Request headers worth keeping with the raw event (never Authorization or cookies).
KEPT_HEADERS = (
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTP_USER_AGENT",
    "HTTP_X_REQUEST_ID",
    "HTTP_X_FORWARDED_FOR",
    "REMOTE_ADDR",
)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def json_safe(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL or lone surrogates: keep the evidence as U+FFFD instead."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
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

    @property
    def key(self) -> str:
        return json_safe(self.idempotency_key[:200])


@dataclass(frozen=True)
class StoredEvent:
    """The stored row an accepted event answers with (its first copy, for a duplicate)."""

    pk: int


_TABLE = InboundEvent._meta.db_table
_FLAGS = QueuedFlag._meta.db_table
# What an accepted event carries into its row, in the order of the statements' parameters.
_FIELDS = (
    ("channel", "text"),
    ("system", "text"),
    ("external_id", "text"),
    ("idempotency_key", "text"),
    ("occurred_at", "timestamptz"),
    ("content_type", "text"),
    ("headers", "text"),
    ("raw_body", "bytea"),
    ("payload", "text"),
    ("individual_cim", "text"),
    ("api_client_id", "bigint"),
)
_COLUMNS = (
    "channel, system, external_id, idempotency_key, status, reason, received_at, occurred_at, content_type, "
    "headers, raw_body, payload, individual_cim, api_client_id, master_id, attempts, visible_at, claimed_by"
)
# The stored row: the fields, in _FIELDS' order, and what every new event starts with.
_ROW = (
    f"{{channel}}, {{system}}, {{external_id}}, {{idempotency_key}}, '{EventStatus.QUEUED}', '', now(), "
    "{occurred_at}, {content_type}, {headers}::jsonb, {raw_body}, {payload}::jsonb, {individual_cim}::jsonb, "
    "{api_client_id}, '', 0, now(), ''"
)


def _store_statement(source: str) -> str:
    """Insert the rows ``source`` gives (a repeated key inserts nothing) and wake the resolver if it is idle.

    The flag flips and the task is queued in the same statement as the rows, so they commit together.
    """
    return f"""
inserted AS (
    INSERT INTO {_TABLE} ({_COLUMNS})
    {source}
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, idempotency_key
),
woken AS (
    UPDATE {_FLAGS} SET queued = true, updated_at = now()
    WHERE name = %b AND NOT queued AND EXISTS (SELECT 1 FROM inserted)
    RETURNING 1
),
task AS (
    INSERT INTO django_q_ormq (key, payload, lock) SELECT %b, %b, now() FROM woken RETURNING id
)
SELECT idempotency_key, id, (SELECT count(*) FROM {_FLAGS} WHERE name = %b), (SELECT count(*) FROM task)
FROM inserted
"""


_NAMES = [name for name, _ in _FIELDS]
# A batch travels as one binary array per field, so the statement's text is the same for two
# events or a thousand: PostgreSQL parses and plans it once per connection (psycopg prepares a
# statement it has seen a few times), and no value is quoted into SQL.
_STORE_BATCH = (
    "WITH incoming AS (SELECT * FROM unnest(%b::int[], "
    + ", ".join(f"%b::{kind}[]" for _, kind in _FIELDS)
    + f") AS v(ord, {', '.join(_NAMES)})),"
    + _store_statement(f"SELECT {_ROW.format(**{name: name for name in _NAMES})} FROM incoming ORDER BY ord")
)
# One event, the intake's usual call, as scalar parameters: unpacking the arrays cost PostgreSQL
# about 0.1 ms and the client 0.06 ms of CPU an event more (docs/benchmarks.md, issue 10's
# "Seventh stop"), on cores a web worker shares with it. The same row and wake-up as a batch's.
_STORE_ONE = "WITH" + _store_statement(f"VALUES ({_ROW.format(**{name: f'%b::{kind}' for name, kind in _FIELDS})})")


class _WakeUpPackage:
    """The resolver task's signed package, made ahead and reused until a statement queues it.

    Signing a package costs more than the rest of the intake's Python; most requests find the
    resolver already asked and queue nothing. A package is at most a second old when queued
    (its "started" time is when it was made), and each queued row gets a package of its own.
    """

    MAX_AGE = 1.0

    def __init__(self) -> None:
        self._package = ""
        self._made = 0.0

    def get(self) -> str:
        now = time.monotonic()
        if not self._package or now - self._made > self.MAX_AGE:
            self._package, self._made = task_package(RESOLVE_TASK, name=RESOLVER_FLAG), now
        return self._package

    def used(self) -> None:
        self._package = ""


_wake_up = _WakeUpPackage()


def _json_text(value: Any) -> str | None:
    """JSON text for a jsonb column; NUL and lone surrogates (which jsonb cannot hold) kept as U+FFFD."""
    if value is None:
        return None
    text = json.dumps(value, separators=(",", ":"), default=str)
    # json.dumps writes characters beyond U+FFFF as surrogate-pair escapes, and a lone surrogate
    # as a lone escape; both start with \ud: check (rarely needed) which it is.
    if "\\u0000" in text or "\\ud" in text:
        text = json.dumps(json_safe(value), separators=(",", ":"), default=str)
    return text


def store_events(events: list[AcceptedEvent]) -> list[tuple[StoredEvent, bool]]:
    """Store events and wake the resolver; returns (stored event, is duplicate) per event, in input order.

    All or nothing: one statement. Duplicates (same idempotency key, in this batch or
    stored before) answer with the first copy and store nothing.
    """
    first: dict[str, AcceptedEvent] = {}
    for event in events:
        first.setdefault(event.key, event)
    rows_in = [
        (
            event.channel,
            event.system,
            json_safe(event.external_id[:255]),
            event.key,
            event.occurred_at,
            event.content_type[:100],
            _json_text(event.headers),
            bytes(event.raw_body),
            _json_text(event.payload),
            _json_text(event.individual_cim),
            event.api_client.pk if event.api_client else None,
        )
        for event in first.values()
    ]
    wake_up = [RESOLVER_FLAG, broker_key(), _wake_up.get(), RESOLVER_FLAG]
    if len(rows_in) == 1:
        statement, params = _STORE_ONE, [*rows_in[0], *wake_up]
    else:
        statement, params = _STORE_BATCH, [list(range(len(rows_in))), *map(list, zip(*rows_in, strict=True)), *wake_up]
    if armed("intake-mid-batch"):
        # A test holds the worker after the statement and before its commit, to kill it there.
        with transaction.atomic():
            rows = execute(statement, params, fetch=True)
            fault_point("intake-mid-batch")
    else:
        rows = execute(statement, params, fetch=True)
    if rows and rows[0][3]:
        _wake_up.used()
    inserted = {key: pk for key, pk, _, _ in rows}
    stored = dict(inserted)
    missing = [key for key in first if key not in stored]
    if missing:
        # Stored before (or by a concurrent delivery that committed first): answer with that copy.
        stored.update(InboundEvent.objects.filter(idempotency_key__in=missing).values_list("idempotency_key", "pk"))
    if rows and rows[0][2] == 0:
        with transaction.atomic():  # a database without the flag row yet
            enqueue_once(RESOLVE_TASK, flag=RESOLVER_FLAG)
    seen: set[str] = set()
    result = []
    for event in events:
        key = event.key
        duplicate = key not in inserted or key in seen
        result.append((StoredEvent(stored[key]), duplicate))
        seen.add(key)
        # IDs, the channel and the source system only: the record's key may be an email address.
        logger.info(
            "event %s %s (%s, %s)",
            stored[key],
            "is a duplicate" if duplicate else "stored",
            event.channel,
            event.system,
            extra={"event_id": stored[key]},
        )
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
    logger.info("event %s rejected (%s)", event.pk, channel, extra={"event_id": event.pk})
    return event


__all__ = ["AcceptedEvent", "EventChannel", "StoredEvent", "request_headers", "store_events", "store_rejected"]
