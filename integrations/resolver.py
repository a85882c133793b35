"""The resolver: inbound events claimed in batches and applied through the resolution engine.

The stored ``InboundEvent`` rows are the queue. A django-q2 task (woken by intake, one
queued at a time, and by a sweep every minute that catches a lost wake-up) claims up to
``HUB_RESOLVER_BATCH`` ready events with ``FOR UPDATE SKIP LOCKED`` and gives them a lease,
then applies them together with ``customers.resolution.engine.resolve`` and writes, for
each event, its sync run and step log (what stewards read), its status, and its dead
letter when it failed for good, all in one transaction with the golden records.

- **Order**: an event is claimed only when no earlier event of the same source record is
  still pending, so a person's changes are applied in the order they were received; the
  engine's ModifiedDate rule (an older change is superseded) holds inside a batch too.
- **Concurrency**: any number of resolver tasks, on any number of hosts, claim disjoint
  batches; the engine's locks keep two of them from deciding about one person at once.
- **Failures**: one bad event fails alone (the engine leaves it out); it is retried with
  backoff (a later ``visible_at``) or dead-lettered after ``PROCESS_MAX_ATTEMPTS``. A claim
  whose worker died becomes visible again when its lease ends and is then retried alone,
  one such claim per claim and before the rest, so an event that kills workers cannot take a
  batch down with it, and a worker's death counts against the one event it was resolving.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from customers.cim import CimValidationError, parse_individual
from customers.resolution.engine import FAILED, SUPERSEDED, Resolution, SourceChange, resolve
from hub.errors import error_summary
from hub.log_context import log_context
from hub.sql import insert_rows, reserve_ids, update_rows
from integrations.choices import (
    MARKETING_CLOUD,
    PENDING_EVENT_STATUSES,
    EventChannel,
    EventStatus,
    RunStatus,
    RunTrigger,
    StepOutcome,
)
from integrations.downstream.models import DownstreamTarget
from integrations.faults import fault_point
from integrations.marketing_cloud.writeback import flush_if_starved, queue_flush
from integrations.metric_samples import fold_samples, observe_many
from integrations.models import DeadLetter, InboundEvent, SyncRun, SyncStep
from integrations.queue import enqueue_once, enqueue_wake_up, task_started, wake_up_started
from integrations.runs import downstream_step, enabled_targets, event_snapshot
from integrations.transport import backoff_delay

logger = logging.getLogger(__name__)

RESOLVE_TASK = "integrations.resolver.resolve_ready_events"
SWEEP_TASK = "integrations.resolver.sweep"
SWEEP_SCHEDULE = "Resolver sweep"
RESOLVER_FLAG = "resolver"
RESOLVER_WAKE_UP = "resolver-later"
PROCESS_MAX_ATTEMPTS = 5
WRITABLE_SYSTEMS = frozenset({MARKETING_CLOUD})
ACTOR = "customers-process"

_EVENTS = InboundEvent._meta.db_table
_PENDING = ", ".join(f"'{s}'" for s in PENDING_EVENT_STATUSES)
_CLAIM = f"""
UPDATE {_EVENTS} AS e
SET status = '{EventStatus.PROCESSING}', attempts = e.attempts + 1, claimed_by = %s,
    visible_at = now() + make_interval(secs => %s)
FROM (
    SELECT c.id, c.status AS prior FROM {_EVENTS} AS c
    WHERE c.status IN ({_PENDING}) AND c.visible_at <= now() {{only}}
      AND NOT EXISTS (
          SELECT 1 FROM {_EVENTS} AS p
          WHERE p.system = c.system AND p.external_id = c.external_id AND p.id < c.id AND p.status IN ({_PENDING})
      )
    ORDER BY c.id
    LIMIT %s
    FOR UPDATE OF c SKIP LOCKED
) AS ready
WHERE e.id = ready.id
RETURNING e.id, ready.prior, e.attempts, e.system, e.external_id, e.occurred_at, e.channel, e.individual_cim
"""


def batch_size() -> int:
    return settings.RESOLVER_BATCH


def wake_resolver() -> bool:
    """Ask the cluster to run the resolver (coalesced: one queued run at a time); in the caller's transaction."""
    return enqueue_once(RESOLVE_TASK, flag=RESOLVER_FLAG)


@dataclass
class Claimed:
    """An event this resolver holds the claim (and lease) of."""

    pk: int
    prior_status: str
    attempts: int
    system: str
    external_id: str
    occurred_at: dt.datetime | None
    channel: str
    individual_cim: Any
    token: str

    @property
    def crashed(self) -> bool:
        """Its previous claim's worker died before finishing it."""
        return self.prior_status == EventStatus.PROCESSING


def claim(limit: int, *, only: list[int] | None = None) -> list[Claimed]:
    """Claim up to ``limit`` ready events (committed at once: the lease is what protects them now)."""
    # Which host and process holds the claim, and which claim it is (the rows it claimed share it).
    token = f"{settings.INSTANCE_NAME}:{os.getpid()}:{uuid.uuid4()}"
    sql = _CLAIM.replace("{only}", "AND c.id = ANY(%s)" if only is not None else "")
    params: list[Any] = [token, float(settings.RESOLVER_LEASE)]
    if only is not None:
        params.append(list(only))
    params.append(limit)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        # Django reads jsonb as text (its JSONField decodes it): so does this raw statement.
        claimed = sorted((Claimed(*row[:-1], _json(row[-1]), token=token) for row in rows), key=lambda c: c.pk)
        crashed = [c for c in claimed if c.crashed]
        if len(crashed) > 1:
            # One crashed claim per claim: it is resolved alone, first, so a worker that dies now
            # died on it, and its attempts count that. The others go back as they were (still
            # crashed, ready now, this claim not counted): had they waited their turn here, a
            # death on any of them would count against all.
            extra = {c.pk for c in crashed[1:]}
            cursor.execute(
                f"UPDATE {_EVENTS} SET attempts = attempts - 1, claimed_by = '', visible_at = now() "
                "WHERE id = ANY(%s) AND claimed_by = %s",
                [sorted(extra), token],
            )
            claimed = [c for c in claimed if c.pk not in extra]
    return claimed


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def resolve_ready_events(limit: int | None = None) -> str:
    """django-q2 entry point: claim and resolve batches until none is ready or the time budget is spent."""
    task_started(RESOLVER_FLAG)
    wake_up_started(RESOLVER_WAKE_UP)
    size = limit or batch_size()
    deadline = time.monotonic() + settings.RESOLVER_TASK_SECONDS
    totals: Counter[str] = Counter()
    while True:
        claimed = claim(size)
        if not claimed:
            break
        if len(claimed) == size:
            # A full batch: more may be waiting, so let an idle worker take the next one meanwhile.
            with transaction.atomic():
                wake_resolver()
        totals += resolve_claimed(claimed)
        fault_point("after-commit")
        flush_if_starved()
        if time.monotonic() > deadline:
            with transaction.atomic():
                wake_resolver()
            break
    schedule_retries()
    return ", ".join(f"{n} {status}" for status, n in sorted(totals.items())) or "nothing ready"


def process_event(event_id: int) -> str:
    """Resolve one event now, if it is ready and not claimed by someone else (replays, tests)."""
    claimed = claim(1, only=[event_id])
    if not claimed:
        status = InboundEvent.objects.filter(pk=event_id).values_list("status", flat=True).first()
        return "missing" if status is None else f"already {status}"
    counts = resolve_claimed(claimed)
    fault_point("after-commit")
    flush_if_starved()
    schedule_retries()
    return _SAID.get(next(iter(counts), ""), "nothing done")


# What ``process_event`` reports for each way an event can end its turn.
_SAID = {
    EventStatus.WRITEBACK: "write-back queued",
    EventStatus.SYNCED: "synced",
    EventStatus.SUPERSEDED: "superseded",
    EventStatus.RETRYING: "retry scheduled",
    EventStatus.DEAD: "dead-lettered",
}


def resolve_claimed(claimed: list[Claimed]) -> Counter[str]:
    """Resolve claimed events: a claim whose last worker died alone and first, then the rest together."""
    counts: Counter[str] = Counter()
    for crashed in (c for c in claimed if c.crashed):
        counts += _measured_batch([crashed])
    together = [c for c in claimed if not c.crashed]
    if together:
        counts += _measured_batch(together)
    return counts


def _measured_batch(claimed: list[Claimed]) -> Counter[str]:
    """One batch, its size and wall time recorded for ``/metrics`` (after its transaction, in one INSERT each)."""
    started = time.monotonic()
    # A batch of one (a crashed claim, a replay): what the engine and connectors log is about that event.
    with log_context(event_id=claimed[0].pk if len(claimed) == 1 else None):
        try:
            return _resolve_batch(claimed)
        finally:
            duration = time.monotonic() - started
            observe_many([("resolver_batch_size", [], len(claimed)), ("resolver_batch_seconds", [], duration)])


def _resolve_batch(claimed: list[Claimed]) -> Counter[str]:
    try:
        with transaction.atomic():
            return _resolve_in_transaction(claimed)
    except DatabaseError as exc:
        # The whole batch failed to commit (the database went away, a deadlock the engine could
        # not avoid): record a retry for each, if the database lets us; else the lease ends it.
        logger.warning("a batch of %s event(s) failed: %s", len(claimed), type(exc).__name__)
        try:
            with transaction.atomic():
                mine = _still_mine(claimed)
                return _record_failures([(c, exc) for c in mine])
        except DatabaseError:
            return Counter({"lost claim": len(claimed)})


def _still_mine(claimed: list[Claimed]) -> list[Claimed]:
    """Lock the claimed rows for this transaction; a row reclaimed by someone else is not ours anymore.

    It waits rather than skips: another resolver's claim statement may hold one of these rows
    for a moment (it checked the row and found it claimed), and a resolver that reclaimed a row
    after our lease ended has changed ``claimed_by`` by the time the wait is over.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {_EVENTS} WHERE id = ANY(%s) AND claimed_by = %s AND status = %s "
            "ORDER BY id FOR NO KEY UPDATE",
            [[c.pk for c in claimed], claimed[0].token, EventStatus.PROCESSING],
        )
        ids = {row[0] for row in cursor.fetchall()}
    return [c for c in claimed if c.pk in ids]


def _resolve_in_transaction(claimed: list[Claimed]) -> Counter[str]:
    mine = _still_mine(claimed)
    failures: list[tuple[Claimed, BaseException]] = []
    work: list[tuple[Claimed, SourceChange]] = []
    exhausted = [c for c in mine if c.crashed and c.attempts > PROCESS_MAX_ATTEMPTS]
    for item in mine:
        if item in exhausted:
            failures.append((item, RuntimeError(f"the worker died processing this event {item.attempts - 1} times")))
            continue
        try:
            source = parse_individual(item.individual_cim or {})
        except CimValidationError as exc:
            failures.append((item, exc))
            continue
        change = SourceChange(
            item.system,
            item.external_id,
            source,
            item.occurred_at,
            # On the generic API a key speaks for its systems' records, not for which golden
            # record they belong to: a carried master ID alone does not move a linked record.
            master_id_may_move=item.channel != EventChannel.API,
        )
        work.append((item, change))
    run_ids = reserve_ids({SyncRun._meta.db_table: len(work)})[SyncRun._meta.db_table]
    for (_, change), run_id in zip(work, run_ids, strict=True):
        change.actor = f"sync-run:{run_id}"
        change.change_info = {"syncRunId": run_id}
        change.source_status = str(change.source.raw.get("subscriberStatus") or "")
        # The Marketing Cloud business unit whose secret verified the call (views.JourneyExecuteView).
        change.business_unit = str(change.source.raw.get("businessUnitMid") or "")
    resolutions = resolve([change for _, change in work], writeback_systems=WRITABLE_SYSTEMS)
    fault_point("after-match")
    done: list[tuple[Claimed, int, Resolution]] = []
    for (item, _), run_id, resolution in zip(work, run_ids, resolutions, strict=True):
        if resolution.status == FAILED:
            failures.append((item, resolution.error or RuntimeError("failed")))
        else:
            done.append((item, run_id, resolution))
    counts = _record_done(done)
    counts += _record_failures(failures)
    return counts


# ---------------------------------------------------------------------------
# Sync runs, step logs, event statuses (set-based)
# ---------------------------------------------------------------------------
def _record_done(done: list[tuple[Claimed, int, Resolution]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    if not done:
        return counts
    now = timezone.now()
    targets = enabled_targets()
    runs, steps, events = [], [], []
    writeback = False
    for item, run_id, resolution in done:
        run_status, event_status, run_steps = _outcome(resolution, targets)
        writeback |= run_status == RunStatus.WAITING
        finished = None if run_status == RunStatus.WAITING else now
        runs.append(
            (
                run_id,
                item.pk,
                RunTrigger.EVENT,
                run_status,
                item.system,
                item.external_id[:255],
                resolution.master_id,
                resolution.rule[:120],
                resolution.started_at or now,
                finished,
                ACTOR,
            )
        )
        for seq, (name, outcome, detail, data, started, ended) in enumerate(run_steps, start=1):
            steps.append((run_id, seq, name, started or now, ended or now, outcome, detail, data))
        events.append((item.pk, event_status, finished, resolution.master_id))
        counts[event_status] += 1
        logger.info("event %s resolved: %s", item.pk, event_status, extra={"event_id": item.pk, "sync_run_id": run_id})
    insert_rows(
        SyncRun._meta.db_table,
        (
            "id",
            "event_id",
            "trigger",
            "status",
            "system",
            "external_id",
            "master_id",
            "match_rule",
            "started_at",
            "finished_at",
            "actor",
            "writeback_attempts",
            "last_error",
        ),
        (
            "bigint",
            "bigint",
            "text",
            "text",
            "text",
            "text",
            "text",
            "text",
            "timestamptz",
            "timestamptz",
            "text",
            "integer",
            "text",
        ),
        [(*row, 0, "") for row in runs],
    )
    _insert_steps(steps)
    update_rows(
        InboundEvent._meta.db_table,
        "id",
        ("id", "status", "processed_at", "master_id"),
        ("bigint", "text", "timestamptz", "text"),
        events,
        expressions={"claimed_by": "''", "reason": "''"},
    )
    if writeback:
        queue_flush()
    return counts


def _insert_steps(steps: list[tuple[Any, ...]]) -> None:
    insert_rows(
        SyncStep._meta.db_table,
        ("run_id", "seq", "name", "started_at", "finished_at", "outcome", "detail", "data"),
        ("bigint", "integer", "text", "timestamptz", "timestamptz", "text", "text", "jsonb"),
        steps,
    )


def _outcome(resolution: Resolution, targets: list[DownstreamTarget]) -> tuple[str, str, list[tuple[Any, ...]]]:
    """(run status, event status, steps) of a resolved event, as its step log tells it."""
    change = resolution.change
    steps: list[tuple[Any, ...]] = []

    def step(name: str, outcome: str, detail: str, data: dict[str, Any] | None = None) -> None:
        started, ended = resolution.steps.get(name, (None, None))
        steps.append((name, outcome, detail, data or {}, started, ended))

    found: dict[str, Any] = {
        "rule": resolution.rule,
        "locks": resolution.locks,
        "compared": resolution.compared,
        "masterId": resolution.master_id or None,
    }
    if resolution.decision:
        found["decision"] = resolution.decision
    if resolution.unknown_master_ids:
        found["unknownMasterIds"] = resolution.unknown_master_ids
    step("find golden record", StepOutcome.OK, f"rule {resolution.rule}: {resolution.detail}", found)
    if resolution.status == SUPERSEDED:
        step(
            "check order",
            StepOutcome.SKIPPED,
            "an event with a newer change for this record was already applied; nothing changed",
            {"eventChangedAt": change.modified_at.isoformat() if change.modified_at else None},
        )
        return RunStatus.SUPERSEDED, EventStatus.SUPERSEDED, steps
    what = "created" if resolution.created else "updated" if resolution.changed_fields else "unchanged"
    step(
        "upsert golden record",
        StepOutcome.OK,
        f"{what} {resolution.master_id}",
        {
            "masterId": resolution.master_id,
            "created": resolution.created,
            "changedFields": resolution.changed_fields,
            "addedContactPoints": resolution.added_contact_points,
        },
    )
    detail = f"{'linked' if resolution.source_created else 'updated'} {change.system} cross reference"
    detail += f" {resolution.source_record_id}"
    if resolution.moved_from:
        detail += f" (moved from {resolution.moved_from})"
    step(
        "upsert cross reference",
        StepOutcome.OK,
        detail,
        {
            "crossReferenceId": resolution.source_record_id,
            "created": resolution.source_created,
            "movedFrom": resolution.moved_from,
        },
    )
    if resolution.suspects_found:
        queued = resolution.queued_candidates
        step(
            "queue match candidates",
            StepOutcome.OK,
            f"{len(queued)} possible match(es) queued for review",
            {"candidates": queued, "found": resolution.suspects_found},
        )
    step(*downstream_step(resolution.master_id, resolution.change_event, targets))
    if resolution.writeback == "queued":
        carried = resolution.carried_master_ids
        reason = "event carried another master ID" if carried else "event carried no master ID"
        step("write back master ID", StepOutcome.OK, "queued", {"reason": reason})
        return RunStatus.WAITING, EventStatus.WRITEBACK, steps
    if resolution.writeback == "not_needed":
        reason = "the event carried this master ID: Marketing Cloud already holds it"
    else:
        reason = f"no write-back connector for {change.system}"
    step("write back master ID", StepOutcome.SKIPPED, reason)
    return RunStatus.SUCCEEDED, EventStatus.SYNCED, steps


def _record_failures(failures: list[tuple[Claimed, BaseException]]) -> Counter[str]:
    """A failed event: retried later with backoff, or dead-lettered (bad data, or out of attempts)."""
    counts: Counter[str] = Counter()
    if not failures:
        return counts
    now = timezone.now()
    events = {e.pk: e for e in InboundEvent.objects.filter(pk__in=[item.pk for item, _ in failures])}
    for item, error in failures:
        event = events.get(item.pk)
        if event is None:
            continue
        message = error_summary(error)[:2000]
        permanent = isinstance(error, CimValidationError) or item.attempts >= PROCESS_MAX_ATTEMPTS
        run = SyncRun.objects.create(
            event=event,
            trigger=RunTrigger.EVENT,
            system=event.system,
            external_id=event.external_id,
            actor=ACTOR,
            started_at=now,
            finished_at=now,
            last_error=message[:4000],
        )
        logger.warning(
            "event %s processing failed: %s",
            item.pk,
            type(error).__name__,
            extra={"event_id": item.pk, "sync_run_id": run.pk},
        )
        event.claimed_by = ""
        event.reason = message
        if permanent:
            _insert_steps([(run.pk, 1, "process event", now, now, StepOutcome.FAILED, message, {})])
            DeadLetter.objects.create(
                event=event, run=run, stage="process", reason=message[:4000], original_event=event_snapshot(event)
            )
            run.status = RunStatus.DEAD
            event.status, event.processed_at = EventStatus.DEAD, now
            counts["dead"] += 1
        else:
            delay = backoff_delay(item.attempts, base=5.0, cap=600.0)
            detail = f"{message}; retry in {delay:.0f}s"
            _insert_steps([(run.pk, 1, "process event", now, now, StepOutcome.RETRY, detail, {})])
            run.status = RunStatus.FAILED
            run.next_attempt_at = now + dt.timedelta(seconds=delay)
            event.status, event.visible_at = EventStatus.RETRYING, run.next_attempt_at
            counts["retrying"] += 1
        run.save(update_fields=["status", "next_attempt_at"])
        event.save(update_fields=["status", "reason", "claimed_by", "processed_at", "visible_at"])
    return counts


# ---------------------------------------------------------------------------
# Wake-ups
# ---------------------------------------------------------------------------
def schedule_retries() -> None:
    """A timed wake-up for the earliest event waiting out its backoff (or a lease), if any."""
    soonest = (
        InboundEvent.objects.filter(status__in=PENDING_EVENT_STATUSES, visible_at__gt=timezone.now())
        .order_by("visible_at")
        .values_list("visible_at", flat=True)
        .first()
    )
    if soonest is not None:
        with transaction.atomic():
            enqueue_wake_up(
                RESOLVE_TASK, flag=RESOLVER_WAKE_UP, delay=(soonest - timezone.now()).total_seconds() + 0.05
            )


def sweep() -> str:
    """Scheduled every minute: wake the resolver when events are ready (a lost wake-up leaves them waiting).

    It also folds the metric samples (``integrations.metric_samples``), so that their table stays
    small when nothing scrapes ``/metrics``.
    """
    fold_samples()
    ready = InboundEvent.objects.filter(status__in=PENDING_EVENT_STATUSES, visible_at__lte=timezone.now()).exists()
    if not ready:
        schedule_retries()
        return "nothing ready"
    with transaction.atomic():
        # A flag left "queued" by a wake-up that was lost with its worker would block every new one.
        task_started(RESOLVER_FLAG)
        wake_resolver()
    return "resolver woken"
