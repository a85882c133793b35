"""Shared pause and circuit breaker for an external system, kept in PostgreSQL.

Every worker process of every host reads and writes the same ``ConnectorState``
row, so a 429 from Marketing Cloud pauses all of them, and a run of failures opens
one breaker for all of them (a per-process breaker would let N workers keep
hammering a system that is down).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from integrations.models import ConnectorState

BREAKER_THRESHOLD = 5  # consecutive transient failures that open the breaker
BREAKER_COOLDOWN = 30.0  # seconds open before the first probe; doubles per reopening
BREAKER_MAX_COOLDOWN = 600.0
PROBE_TIMEOUT = 60.0  # a probe not reported back by then (worker died) lets another through


@dataclass(frozen=True)
class Gate:
    """Whether a call may go out now; if not, how long to wait and why."""

    allowed: bool
    wait: float = 0.0
    probe: bool = False
    reason: str = ""


def _locked_state(system: str) -> ConnectorState:
    ConnectorState.objects.get_or_create(system=system)
    return ConnectorState.objects.select_for_update().get(system=system)


def check_gate(system: str) -> Gate:
    now = timezone.now()
    with transaction.atomic():
        state = _locked_state(system)
        if state.paused_until and state.paused_until > now:
            return Gate(False, (state.paused_until - now).total_seconds(), reason=f"paused: {state.pause_reason}")
        if state.breaker_state == ConnectorState.OPEN:
            if state.open_until and state.open_until > now:
                return Gate(False, (state.open_until - now).total_seconds(), reason="circuit breaker open")
            state.breaker_state = ConnectorState.HALF_OPEN
            state.save(update_fields=["breaker_state", "updated_at"])
            return Gate(True, probe=True, reason="circuit breaker half open: probing")
        if state.breaker_state == ConnectorState.HALF_OPEN:
            if state.updated_at > now - dt.timedelta(seconds=PROBE_TIMEOUT):
                return Gate(False, 5.0, reason="circuit breaker half open: a probe is in flight")
            state.save(update_fields=["updated_at"])
            return Gate(True, probe=True, reason="circuit breaker half open: probing again")
        return Gate(True)


def record_success(system: str) -> None:
    """The system answered (2xx, or a 4xx about our data): it is up."""
    with transaction.atomic():
        state = _locked_state(system)
        state.calls += 1
        state.consecutive_failures = 0
        state.last_success_at = timezone.now()
        if state.breaker_state != ConnectorState.CLOSED:
            state.breaker_state = ConnectorState.CLOSED
            state.open_until = None
            state.times_opened = 0
        state.save()


def record_failure(system: str, error: str, *, trips_breaker: bool = True, pause_for: float | None = None) -> None:
    """A transient failure; ``pause_for`` seconds pause everyone (throttling)."""
    now = timezone.now()
    with transaction.atomic():
        state = _locked_state(system)
        state.calls += 1
        state.last_error = error[:2000]
        state.last_failure_at = now
        if pause_for:
            until = now + dt.timedelta(seconds=pause_for)
            if not state.paused_until or until > state.paused_until:
                state.paused_until = until
                state.pause_reason = error[:300]
        if trips_breaker:
            state.consecutive_failures += 1
            if state.breaker_state == ConnectorState.HALF_OPEN or state.consecutive_failures >= BREAKER_THRESHOLD:
                state.times_opened += 1
                cooldown = min(BREAKER_MAX_COOLDOWN, BREAKER_COOLDOWN * 2 ** (state.times_opened - 1))
                state.breaker_state = ConnectorState.OPEN
                state.opened_at = now
                state.open_until = now + dt.timedelta(seconds=cooldown)
        state.save()


def describe(system: str) -> dict[str, object]:
    state = ConnectorState.objects.filter(system=system).first()
    if state is None:
        return {"system": system, "breaker": ConnectorState.CLOSED, "pausedUntil": None}
    now = timezone.now()
    return {
        "system": system,
        "breaker": state.breaker_state,
        "consecutiveFailures": state.consecutive_failures,
        "openUntil": state.open_until.isoformat() if state.open_until and state.open_until > now else None,
        "pausedUntil": state.paused_until.isoformat() if state.paused_until and state.paused_until > now else None,
        "lastSuccessAt": state.last_success_at.isoformat() if state.last_success_at else None,
        "lastError": state.last_error or None,
    }
