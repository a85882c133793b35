"""The resolution engine: source records in, golden records out, for one event or a million rows.

``resolve`` applies a batch of source-record changes (a Journey Builder call, a CIM event,
a reconciliation row, a line of a subscriber export) as if one after the other, in the
order given, with a few set-based statements for the whole batch:

1. lock every identity the batch touches (``hub.sql.advisory_lock``: its source records,
   carried master IDs and blocking keys, in one statement);
2. load what the rules need: the cross references of the batch, the golden records its
   master IDs name, the candidates of all its blocking keys at once (one LATERAL lookup),
   those records' sources, not-a-match pairs and open review pairs;
3. decide each record in memory, in order: a carried master ID (redirects followed), the
   cross reference, else the match rules; an older change than the source already sent is
   superseded; the golden record is created or recomputed (survivorship, lineage, contact
   points, blocking keys); suspects go to review; an outbox change event is recorded; the
   master ID is marked for write-back. A record of this batch sees what the records before
   it did: two new records of one person in one batch become one golden record;
4. write it all (``UnitOfWork.flush``).

One bad record fails alone: a record whose application raises is left out and the batch
is decided again without it; when the writing itself fails, the records are applied one
by one, each in its own savepoint. When a golden record changed under the batch (a
steward's merge), the batch is decided again on fresh data.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from customers.choices import ChangeType, CrossReferenceStatus, HistoryAction, WritebackState
from customers.cim import SourceIndividual
from customers.history import require_atomic
from customers.resolution.blocking import IDENTITY_KEY_KINDS, MatchProfile, lookup_keys, profile_from_source
from customers.resolution.rules import OUTCOME_AUTO, OUTCOME_SUSPECT, Decision
from customers.resolution.store import Golden, PendingCandidate, PendingChange, StaleState, UnitOfWork
from customers.resolution.survivorship import SURVIVING_FIELDS
from hub.sql import advisory_lock

logger = logging.getLogger(__name__)

APPLIED, SUPERSEDED, FAILED = "applied", "superseded", "failed"
# The review queue's reason for a pair that a carried master ID, not the rules, brought together.
CARRIED_MASTER_ID_RULE = "carried master ID (not applied)"
# A batch decided again this often because golden records changed under it is then applied one by one.
MAX_STALE_RETRIES = 3


@dataclass(eq=False)
class SourceChange:
    """One record of a source system to apply: what it says now, and when the source changed it."""

    system: str
    external_id: str
    source: SourceIndividual
    modified_at: dt.datetime | None = None
    source_status: str = ""
    # The part of the source system the record lives in (a Marketing Cloud business unit's MID);
    # blank keeps whatever the cross reference recorded before.
    business_unit: str = ""
    actor: str = ""
    # Whether a carried master ID may move a source record already linked to another golden
    # record. A channel whose word is not enough for that (the generic API) leaves the record
    # where it is and sends the pair to a steward.
    master_id_may_move: bool = True
    # Added to the outbox change event (the sync run that applied it, for one).
    change_info: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def profile(self) -> MatchProfile:
        return profile_from_source(self.source)

    @cached_property
    def keys(self) -> set[tuple[str, str]]:
        # Crossed keys too (a swapped given name and surname), and so locked too: a writer of the
        # swapped record holds them as its own keys.
        return lookup_keys(self.profile)

    @cached_property
    def lock_names(self) -> set[str]:
        """Everything a concurrent writer about the same person would also lock."""
        names = {f"xref:{self.system}:{self.external_id}"}
        names.update(f"master:{m}" for m in self.source.master_ids)
        names.update(f"key:{kind}:{value}" for kind, value in self.keys if kind in IDENTITY_KEY_KINDS)
        return names


@dataclass(eq=False)
class Resolution:
    """What the engine did with one source record, for its sync run's step log."""

    change: SourceChange
    status: str = APPLIED
    error: BaseException | None = None
    rule: str = "none"
    detail: str = ""
    decision: dict[str, Any] | None = None
    compared: int = 0
    locks: int = 0
    unknown_master_ids: list[str] = field(default_factory=list)
    master_id: str = ""
    created: bool = False
    changed_fields: list[str] = field(default_factory=list)
    added_contact_points: int = 0
    source_record_id: int | None = None
    source_created: bool = False
    moved_from: str | None = None
    suspects_found: int = 0
    suspects: list[PendingCandidate] = field(default_factory=list)
    change_event: PendingChange | None = None
    # "queued" (the source needs the master ID written), "not_needed", or "" (no write-back connector).
    writeback: str = ""
    carried_master_ids: list[str] = field(default_factory=list)
    started_at: dt.datetime | None = None
    steps: dict[str, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)

    @property
    def queued_candidates(self) -> list[int]:
        return [p.pk for p in self.suspects if p.pk is not None]


class _ChangeFailed(Exception):
    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


def resolve(
    changes: list[SourceChange],
    *,
    writeback_systems: frozenset[str] = frozenset(),
    render_snapshots: bool = True,
) -> list[Resolution]:
    """Apply ``changes`` in order; one Resolution per change, in the same order.

    Runs in the caller's transaction. ``writeback_systems`` are the systems with a
    write-back connector: their records are marked for the master ID to be written back
    when the change did not carry it. ``render_snapshots`` off leaves the outbox rows
    without a CIM snapshot (a backfill's million changes are rendered when delivered).
    """
    require_atomic()
    if not changes:
        return []
    locks = advisory_lock(name for change in changes for name in change.lock_names)
    logger.debug("resolving %s change(s) under %s lock(s)", len(changes), len(locks))
    results: dict[int, Resolution] = {}
    pending = list(range(len(changes)))
    stale = 0
    while pending:
        try:
            with transaction.atomic():
                work, decided = _decide(changes, pending, writeback_systems, render_snapshots)
                work.flush()
            results.update(decided)
            pending = []
        except _ChangeFailed as failure:
            results[failure.index] = _failed(changes[failure.index], failure.error)
            pending.remove(failure.index)
        except StaleState:
            stale += 1
            if stale > MAX_STALE_RETRIES:
                results.update(_one_by_one(changes, pending, writeback_systems, render_snapshots))
                pending = []
        except DatabaseError as exc:
            logger.warning("a batch of %s failed to write (%s): applying one by one", len(pending), type(exc).__name__)
            results.update(_one_by_one(changes, pending, writeback_systems, render_snapshots))
            pending = []
    return [results[i] for i in range(len(changes))]


def _decide(
    changes: list[SourceChange], indexes: list[int], writeback_systems: frozenset[str], render_snapshots: bool
) -> tuple[UnitOfWork, dict[int, Resolution]]:
    """Load what the batch needs and decide every change in memory (nothing written yet)."""
    work = UnitOfWork(render_snapshots=render_snapshots)
    decided: dict[int, Resolution] = {}
    batch = [changes[i] for i in indexes]
    work.reserve(goldens=len(batch), sources=len(batch))
    work.load_sources((c.system, c.external_id) for c in batch)
    work.load_goldens({r.individual_id for r in work.sources.values()})
    work.load_master_ids(m for c in batch for m in c.source.master_ids)
    work.load_keys(key for c in batch for key in c.keys)
    # Look ahead: the golden records the rules would merge new source records into, as the
    # database has them, get their sources' payloads in one query (they are about to change).
    # The decisions are remembered, so each record's own turn below does not decide them again.
    likely = set()
    for change in batch:
        record = work.source(change.system, change.external_id)
        if record is None and not change.source.master_ids:
            best = work.match(change.profile, change.keys).best
            if best is not None:
                likely.add(best[0].pk)
    work.load_sources_of(likely)
    for i in indexes:
        try:
            decided[i] = _apply(work, changes[i], writeback_systems)
        except Exception as exc:
            raise _ChangeFailed(i, exc) from exc
    return work, decided


def _one_by_one(
    changes: list[SourceChange], indexes: list[int], writeback_systems: frozenset[str], render_snapshots: bool
) -> dict[int, Resolution]:
    results: dict[int, Resolution] = {}
    for i in indexes:
        try:
            with transaction.atomic():
                work, decided = _decide(changes, [i], writeback_systems, render_snapshots)
                work.flush()
            results[i] = decided[i]
        except _ChangeFailed as failure:
            results[i] = _failed(changes[i], failure.error)
        except (StaleState, DatabaseError) as exc:
            results[i] = _failed(changes[i], exc)
    return results


def _failed(change: SourceChange, error: BaseException) -> Resolution:
    return Resolution(change, status=FAILED, error=error)


def _apply(work: UnitOfWork, change: SourceChange, writeback_systems: frozenset[str]) -> Resolution:
    """One source record, as the rules decide it (see the module's docstring, step 3)."""
    started = timezone.now()
    result = Resolution(change, started_at=started, locks=len(change.lock_names))
    carried = change.source.master_ids
    result.carried_master_ids = carried
    record = work.source(change.system, change.external_id)

    found = None
    for master_id in carried:
        golden = work.golden_for_master_id(master_id)
        if golden is not None and golden.active:
            found = golden
            result.rule = "master_id"
            result.detail = (
                "carried master ID found"
                if golden.master_id == master_id
                else f"carried master ID {master_id} was merged into {golden.master_id}"
            )
            break
        result.unknown_master_ids.append(master_id)
    # On a channel whose word alone is not enough (``master_id_may_move`` off), a carried master ID
    # is a claim to check: it never moves a linked record, and it joins a new record to that golden
    # record only when the match rules would merge them anyway. Otherwise the pair goes to review.
    claimed: Golden | None = None
    claim_verdict: Decision | None = None
    if found is not None and not change.master_id_may_move:
        owner = work.goldens.get(record.individual_id) if record is not None else None
        if owner is not None and owner.active and owner.pk != found.pk:
            claimed, found = found, owner
            result.rule = "cross_reference"
            result.detail = (
                f"{change.system} record already linked; the master ID it carried ({claimed.master_id}) "
                "names another golden record: sent to review, not moved"
            )
        elif record is None:
            claim_verdict = work.decide(change.profile, work.profile_of(found))
            if claim_verdict.outcome == OUTCOME_AUTO:
                result.detail += f"; the match rules agree (rule {claim_verdict.rule!r})"
                result.decision = claim_verdict.explanation()
            else:
                claimed, found = found, None
                result.rule = "none"
    if found is None and record is not None:
        owner = work.goldens.get(record.individual_id)
        if owner is not None and owner.active:
            found = owner
            result.rule, result.detail = "cross_reference", f"{change.system} record already linked"
    if found is not None:
        # A record that has its golden record already is still compared: a change that makes it
        # look like someone else reaches a steward (never an automatic merge).
        matched = work.match(change.profile, change.keys, exclude={found.pk} | work.not_a_match_with(found.pk))
        suspects = ([(matched.best[0].pk, matched.best[1])] if matched.best else []) + matched.suspects
        target = found
    else:
        matched = work.match(change.profile, change.keys)
        suspects = matched.suspects
        target = None
        if matched.best is not None:
            target, decision = matched.best
            result.rule = decision.rule
            result.detail = f"match rule {decision.rule!r} (score {decision.score:.2f})"
            if decision.weight is not None:
                result.detail += f"; match weight {decision.weight:.1f} (matcher model v{decision.model_version})"
            result.decision = decision.explanation()
        else:
            result.detail = f"no golden record matched ({matched.compared} compared)"
    result.compared = matched.compared
    if claimed is not None and claim_verdict is not None:
        result.detail += f"; carried master ID {claimed.master_id} sent to review (the match rules do not merge them)"
    found_at = timezone.now()
    result.steps["find golden record"] = (started, found_at)

    if (
        record is not None
        and change.modified_at is not None
        and record.source_modified_at is not None
        and change.modified_at < record.source_modified_at
    ):
        # An older change than the source already told us: it must not overwrite the newer one.
        result.status = SUPERSEDED
        result.master_id = target.master_id if target else ""
        return result

    now = timezone.now()
    created = target is None
    if target is None:
        target = work.new_golden(now)
    if record is None:
        record = work.new_source(change.system, change.external_id, target, now)
        result.source_created = True
        previous = None
    else:
        previous = work.move_source(record, target)
    columns: dict[str, Any] = {"last_seen_at": now}
    if previous is not None:
        result.moved_from = previous.master_id
        columns["status"] = CrossReferenceStatus.VALID  # a source record coming back after its person was erased
    if change.source.system_id:
        columns["system_record_id"] = change.source.system_id[:64]
    if change.source_status:
        columns["source_status"] = change.source_status[:40]
    if change.business_unit:
        columns["business_unit"] = change.business_unit[:20]
    if change.modified_at and (record.source_modified_at is None or change.modified_at > record.source_modified_at):
        columns["source_modified_at"] = change.modified_at
    if carried:
        columns["source_master_id"] = carried[0][:64]
    if result.source_created or previous is not None:
        columns["match_rule"] = result.rule[:120]
        columns["match_detail"] = result.decision or {"rule": result.rule, "detail": result.detail}
    work.update_source(record, change.source, profile=change.profile, **columns)
    record.updated_at = now

    consent = (change.source.do_not_market_since, change.system) if change.source.do_not_market_since else None
    recomputed = work.recompute(
        target,
        actor=change.actor,
        now=now,
        incoming_consent=consent,
        history_action=None if created else HistoryAction.UPDATE,
    )
    if created:
        work.record(
            target,
            HistoryAction.CREATE,
            actor=change.actor,
            now=now,
            after={name: target.values[name] for name in SURVIVING_FIELDS},
        )
    result.created = created
    result.changed_fields = [] if created else recomputed.changed_fields
    result.added_contact_points = recomputed.added_contact_points
    result.master_id = target.master_id
    golden_at = timezone.now()
    result.steps["upsert golden record"] = (found_at, golden_at)

    if previous is not None:
        # The record it left is recomputed from the sources it still has.
        left = work.recompute(previous, actor=change.actor, now=now)
        if left.changed_fields or left.removed_contact_points:
            work.publish(
                previous,
                ChangeType.UPDATED,
                actor=change.actor,
                now=now,
                change={"changedFields": left.changed_fields, "unlinked": _pair(change), "source": change.system},
            )
    if result.source_created or previous is not None:
        work.record(
            target,
            HistoryAction.RELINK if previous is not None else HistoryAction.LINK,
            actor=change.actor,
            now=now,
            object_type="CrossReference",
            object_id=record.pk,
            before={"master_id": previous.master_id} if previous is not None else None,
            after={"system": change.system, "external_id": change.external_id, "master_id": target.master_id},
        )
    result.source_record_id = record.pk
    linked_at = timezone.now()
    result.steps["upsert cross reference"] = (golden_at, linked_at)

    if claimed is not None:
        suspects.insert(0, (claimed.pk, _claimed_by_master_id(change, claimed, claim_verdict)))
    result.suspects_found = len(suspects)
    for other_id, decision in suspects:
        if other_id != target.pk:
            queued = work.queue_suspect(target, other_id, decision, actor=change.actor, now=now)
            if queued is not None:
                result.suspects.append(queued)
    result.steps["queue match candidates"] = (linked_at, timezone.now())

    if created or result.changed_fields or result.added_contact_points or result.source_created or previous:
        result.change_event = work.publish(
            target,
            ChangeType.CREATED if created else ChangeType.UPDATED,
            actor=change.actor,
            now=now,
            change={
                "changedFields": result.changed_fields,
                "addedContactPoints": result.added_contact_points,
                "linked": _pair(change) if result.source_created else None,
                **change.change_info,
                "source": change.system,
            },
        )
    if change.system in writeback_systems:
        # The change is the source's own word on what it holds: write when it lacked the master
        # ID or carried another one, whatever was written before (a row can be reloaded behind
        # our back).
        needed = target.master_id not in carried
        record.writeback_intent = WritebackState.PENDING if needed else WritebackState.NOT_NEEDED
        result.writeback = "queued" if needed else "not_needed"
    return result


def _claimed_by_master_id(change: SourceChange, claimed: Golden, verdict: Decision | None) -> Decision:
    """Why a pair is reviewed when a source record carried a master ID that was not applied."""
    return Decision(
        outcome=OUTCOME_SUSPECT,
        rule=CARRIED_MASTER_ID_RULE,
        rule_id=None,
        score=verdict.score if verdict else 0.0,
        comparisons=verdict.comparisons if verdict else {},
        note=f"{change.system} {change.external_id} carried master ID {claimed.master_id}"
        + (" (the match rules do not merge them)" if verdict else ""),
    )


def _pair(change: SourceChange) -> dict[str, str]:
    return {"system": change.system, "externalId": change.external_id}


__all__ = ["APPLIED", "FAILED", "SUPERSEDED", "Resolution", "SourceChange", "resolve"]
