"""History rows: who changed what on a golden record, written in the change's own transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection

from customers.models import HistoryEntry
from hub.sql import insert_rows


def require_atomic() -> None:
    """Writers to the MDM domain run inside the caller's transaction, never on their own."""
    if not connection.in_atomic_block:
        raise RuntimeError("golden-record writes must run inside transaction.atomic()")


def jsonable(value: Any) -> Any:
    """Dates and times as ISO 8601 text, inside dicts and lists too (history and change JSON)."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def actor_label(actor: str) -> str:
    return actor[:120]


@dataclass
class HistoryRow:
    """One history entry before it is written (the unit of work collects and writes them together)."""

    individual_id: int | None
    master_id: str
    action: str
    object_type: str
    object_id: int | None
    actor: str
    actor_user_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: dt.datetime


_COLUMNS = (
    "individual_id",
    "master_id",
    "action",
    "object_type",
    "object_id",
    "actor",
    "actor_user_id",
    "before",
    "after",
    "created_at",
)
_TYPES = ("bigint", "text", "text", "text", "bigint", "text", "integer", "jsonb", "jsonb", "timestamptz")


def write_history(rows: Sequence[HistoryRow]) -> int:
    """Insert history rows in one statement."""
    insert_rows(
        HistoryEntry._meta.db_table,
        _COLUMNS,
        _TYPES,
        [
            (
                r.individual_id,
                r.master_id,
                r.action,
                r.object_type,
                r.object_id,
                actor_label(r.actor),
                r.actor_user_id,
                r.before,  # dates become ISO 8601 text as the rows are sent (hub.sql)
                r.after,
                r.created_at,
            )
            for r in rows
        ],
    )
    return len(rows)


def record_history(
    *,
    individual: Any,
    master_id: str,
    action: str,
    obj: Any,
    actor: str,
    actor_user: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> HistoryEntry:
    """One history row now, for a change made outside a unit of work (a steward's not-a-match...)."""
    require_atomic()
    return HistoryEntry.objects.create(
        individual=individual,
        master_id=master_id,
        action=action,
        object_type=type(obj).__name__ if obj is not None else "",
        object_id=getattr(obj, "pk", None),
        actor=actor_label(actor),
        actor_user=actor_user,
        before=jsonable(before) if before is not None else None,
        after=jsonable(after) if after is not None else None,
    )
