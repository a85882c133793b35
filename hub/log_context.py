"""The event and sync run a log line belongs to, carried as fields of their own.

Intake and the resolver log with ``extra={"event_id": ..., "sync_run_id": ...}`` where they name one
event. Where the work in hand is one event (the resolver's batch of one: a crashed claim, a replay),
it runs inside :func:`log_context`, and :class:`LogContextFilter` gives every record logged
meanwhile, by the engine or a connector too, that event's ID. Both are IDs, never personal data.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

CONTEXT_FIELDS = ("event_id", "sync_run_id")
_current: dict[str, contextvars.ContextVar[int | None]] = {
    name: contextvars.ContextVar(f"hub_log_{name}", default=None) for name in CONTEXT_FIELDS
}


@contextmanager
def log_context(*, event_id: int | None = None, sync_run_id: int | None = None) -> Iterator[None]:
    """Records logged inside get these IDs (unless they name their own with ``extra``)."""
    tokens = [
        (_current[name], _current[name].set(value))
        for name, value in (("event_id", event_id), ("sync_run_id", sync_run_id))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class LogContextFilter(logging.Filter):
    """Sets ``event_id`` and ``sync_run_id`` on every record: its own, the context's, or None."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, _current[name].get())
        return True
