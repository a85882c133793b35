"""The write-back state of cross references: which master IDs a source system still has to be told.

Pending cross references are the write-back queue (due time, attempts): several changes
for one source record coalesce into its one row. A connector claims due rows, calls its
system, and records the outcome here, set-based, with a history row per master ID written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils import timezone

from customers.choices import HistoryAction, WritebackState
from customers.history import HistoryRow, require_atomic, write_history
from customers.models import CrossReference
from hub.sql import update_rows

_TABLE = CrossReference._meta.db_table


def request_writeback(xref_ids: Sequence[int], *, now: dt.datetime | None = None) -> int:
    """Mark cross references pending: due now, attempts reset (one statement)."""
    require_atomic()
    if not xref_ids:
        return 0
    return CrossReference.objects.filter(pk__in=list(xref_ids)).update(
        writeback_state=WritebackState.PENDING,
        writeback_due_at=now or timezone.now(),
        writeback_attempts=0,
        updated_at=now or timezone.now(),
    )


@dataclass(frozen=True)
class Written:
    xref_id: int
    individual_id: int
    master_id: str  # the master ID the system now holds ("" when an erasure cleared it)
    current_master_id: str  # the golden record's own master ID, for its history
    system: str
    external_id: str
    actor: str


def record_written(rows: Sequence[Written], *, now: dt.datetime | None = None) -> None:
    """The system confirmed these master IDs: state written, with a history row each."""
    require_atomic()
    now = now or timezone.now()
    update_rows(
        _TABLE,
        "id",
        ("id", "source_master_id", "written_at"),
        ("bigint", "text", "timestamptz"),
        [(r.xref_id, r.master_id, now) for r in rows],
        expressions={
            "writeback_state": f"'{WritebackState.WRITTEN}'",
            "writeback_error": "''",
            "writeback_attempts": "0",
            "writeback_due_at": "NULL",
            "updated_at": "s.written_at",
        },
    )
    write_history(
        [
            HistoryRow(
                individual_id=r.individual_id,
                master_id=r.current_master_id,
                action=HistoryAction.WRITEBACK,
                object_type="CrossReference",
                object_id=r.xref_id,
                actor=r.actor,
                actor_user_id=None,
                before=None,
                after={"system": r.system, "external_id": r.external_id, "master_id": r.master_id},
                created_at=now,
            )
            for r in rows
        ]
    )


def record_failed(rows: Sequence[tuple[int, str]], *, now: dt.datetime | None = None) -> None:
    """(xref id, error): the write-back failed for good; it waits for a steward's replay."""
    require_atomic()
    update_rows(
        _TABLE,
        "id",
        ("id", "writeback_error", "updated_at"),
        ("bigint", "text", "timestamptz"),
        [(pk, error[:2000], now or timezone.now()) for pk, error in rows],
        expressions={"writeback_state": f"'{WritebackState.FAILED}'", "writeback_due_at": "NULL"},
    )


def record_deferred(rows: Sequence[tuple[int, dt.datetime, str]], *, now: dt.datetime | None = None) -> None:
    """(xref id, due at, error): a transient failure; the write-back stays pending, due again later."""
    require_atomic()
    update_rows(
        _TABLE,
        "id",
        ("id", "writeback_due_at", "writeback_error", "updated_at"),
        ("bigint", "timestamptz", "text", "timestamptz"),
        [(pk, due, error[:2000], now or timezone.now()) for pk, due, error in rows],
        expressions={"writeback_attempts": "t.writeback_attempts + 1"},
    )


def hold_pending(xref_ids: Sequence[int]) -> int:
    """Take pending write-backs out of the queue (no due time; still pending: nothing is written yet).

    For a connector whose request carries them and answers later (Marketing Cloud's bulk API): no
    flush sends them meanwhile. Its outcome goes through ``record_*`` like any other.
    """
    require_atomic()
    if not xref_ids:
        return 0
    return CrossReference.objects.filter(pk__in=list(xref_ids), writeback_state=WritebackState.PENDING).update(
        writeback_due_at=None
    )
