"""Every write to the MDM domain goes through these functions.

Each runs inside the caller's transaction (they refuse to run outside one), takes
the locks that keep two concurrent events for one person from minting two master
IDs, and writes its history row in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from customers.choices import ChangeType, HistoryAction, WritebackState
from customers.cim import SourceIndividual
from customers.models import ChangeEvent, CrossReference, HistoryEntry, Individual

GOLDEN_FIELDS = ("salutation", "first_name", "middle_name", "last_name", "name_suffix", "birth_date", "gender")


def _require_atomic() -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("customers.actions must run inside transaction.atomic()")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def record_history(
    *,
    individual: Individual | None,
    master_id: str,
    action: str,
    obj: Any,
    actor: str,
    actor_user: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> HistoryEntry:
    _require_atomic()
    return HistoryEntry.objects.create(
        individual=individual,
        master_id=master_id,
        action=action,
        object_type=type(obj).__name__ if obj is not None else "",
        object_id=getattr(obj, "pk", None),
        actor=actor[:120],
        actor_user=actor_user,
        before={k: _jsonable(v) for k, v in before.items()} if before is not None else None,
        after={k: _jsonable(v) for k, v in after.items()} if after is not None else None,
    )


# ---------------------------------------------------------------------------
# Locking and finding
# ---------------------------------------------------------------------------
def identity_lock_names(
    system: str, external_id: str, source: SourceIndividual, *, kinds: frozenset[str] | set[str]
) -> set[str]:
    """The advisory-lock names of a source record: itself, carried master IDs, its blocking keys of ``kinds``."""
    from customers.matching import blocking_keys, profile_from_source

    names = {f"xref:{system}:{external_id}"}
    names.update(f"master:{m}" for m in source.master_ids)
    names.update(f"key:{kind}:{value}" for kind, value in blocking_keys(profile_from_source(source)) if kind in kinds)
    return names


def lock_identity(*, system: str, external_id: str, source: SourceIndividual) -> list[str]:
    """Serialize every writer that could touch the same person.

    One transaction-scoped advisory lock per identifying key (the source record,
    each carried master ID, each blocking key through which an auto-merge rule can
    find a candidate), taken in sorted order so two writers never wait on each other
    in a cycle. Two events for one person from different systems share such a key,
    so the second waits and then finds the first's golden record. Backfills take the
    same names for the source record, master IDs, mailbox and phone
    (``identity_lock_names``), so a backfill and an event serialize too.
    Returns the keys locked.
    """
    from customers.matching import IDENTITY_KEY_KINDS

    _require_atomic()
    ordered = sorted(identity_lock_names(system, external_id, source, kinds=IDENTITY_KEY_KINDS))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(%s::text[]) AS k", [ordered]
        )
    return ordered


@dataclass
class GoldenRecordMatch:
    individual: Individual | None
    rule: str  # master_id | cross_reference | the match rule's name | none
    detail: str
    unknown_master_ids: list[str] = field(default_factory=list)
    cross_reference: CrossReference | None = None
    # The rules' explanation when they decided (outcome, rule, score, per-attribute comparison).
    decision: dict[str, Any] | None = None
    # Pairs for a steward: (golden record id, Decision) the rules found close but not certain.
    suspects: list[Any] = field(default_factory=list)
    compared: int = 0


def find_golden_record(*, system: str, external_id: str, source: SourceIndividual) -> GoldenRecordMatch:
    """A carried master ID (redirects followed), then the cross reference, then the match rules.

    The rules compare the record with the golden records sharing a blocking key:
    an auto-merge rule links it to the best of them; suspect pairs are returned for
    the review queue. A record already linked is still compared, so a change that
    makes it look like someone else reaches a steward (never an automatic merge).
    """
    from customers.matching import profile_from_source
    from customers.resolution import is_active, match_profile, not_a_match_with, resolve_master_id

    _require_atomic()
    xref = CrossReference.objects.filter(system=system, external_id=external_id).first()
    unknown: list[str] = []
    profile = profile_from_source(source)
    found: GoldenRecordMatch | None = None
    for master_id in source.master_ids:
        individual = resolve_master_id(master_id)
        if individual is not None and is_active(individual):
            individual = Individual.objects.select_for_update().get(pk=individual.pk)
            detail = "carried master ID found"
            if individual.master_id != master_id:
                detail = f"carried master ID {master_id} was merged into {individual.master_id}"
            found = GoldenRecordMatch(individual, "master_id", detail, unknown, xref)
            break
        unknown.append(master_id)
    if found is None and xref is not None:
        individual = Individual.objects.select_for_update().get(pk=xref.individual_id)
        if is_active(individual):
            found = GoldenRecordMatch(individual, "cross_reference", f"{system} record already linked", unknown, xref)
    if found is not None:
        exclude = {found.individual.pk} | not_a_match_with(found.individual.pk)
        result = match_profile(profile, exclude=exclude)
        # For a record that already has its golden record, even an auto-merge verdict only queues a review.
        found.suspects = ([(result.best[0].pk, result.best[1])] if result.best else []) + result.suspects
        found.compared = result.compared
        return found
    result = match_profile(profile)
    if result.best is not None:
        individual, decision = result.best
        return GoldenRecordMatch(
            individual,
            decision.rule,
            f"match rule {decision.rule!r} (score {decision.score:.2f})",
            unknown,
            xref,
            decision=decision.explanation(),
            suspects=result.suspects,
            compared=result.compared,
        )
    return GoldenRecordMatch(
        None,
        "none",
        f"no golden record matched ({result.compared} compared)",
        unknown,
        xref,
        suspects=result.suspects,
        compared=result.compared,
    )


def is_superseded(xref: CrossReference | None, source_modified_at: dt.datetime | None) -> bool:
    """An event older than what the source already told us must not overwrite it."""
    return bool(
        xref is not None
        and source_modified_at is not None
        and xref.source_modified_at is not None
        and source_modified_at < xref.source_modified_at
    )


# ---------------------------------------------------------------------------
# Golden record
# ---------------------------------------------------------------------------
@dataclass
class GoldenRecordChange:
    individual: Individual
    created: bool
    changed_fields: list[str]
    added_contact_points: int


def apply_source_to_golden_record(
    individual: Individual | None,
    source: SourceIndividual,
    *,
    system: str,
    actor: str,
    actor_user: Any = None,
    external_id: str = "",
    changed_at: dt.datetime | None = None,
) -> GoldenRecordChange:
    """Create the golden record or recompute it with this source record's new values.

    Survivorship runs per attribute over every source record of the person (see
    ``customers.survivorship``), the incoming one standing in for its stored row.
    """
    from customers.resolution import recompute_golden_record
    from customers.survivorship import SourceValues

    _require_atomic()
    created = individual is None
    if individual is None:
        individual = Individual.objects.create()
    xref_id = CrossReference.objects.filter(system=system, external_id=external_id).values_list("pk", flat=True).first()
    incoming = SourceValues(system, external_id, xref_id, changed_at or timezone.now(), source)
    recomputed = recompute_golden_record(
        individual,
        actor=actor,
        actor_user=actor_user,
        incoming=incoming,
        history_action=None if created else HistoryAction.UPDATE,
    )
    if created:
        record_history(
            individual=individual,
            master_id=individual.master_id,
            action=HistoryAction.CREATE,
            obj=individual,
            actor=actor,
            actor_user=actor_user,
            after={name: getattr(individual, name) for name in GOLDEN_FIELDS},
        )
    return GoldenRecordChange(
        individual, created, [] if created else recomputed.changed_fields, recomputed.added_contact_points
    )


# ---------------------------------------------------------------------------
# Cross references
# ---------------------------------------------------------------------------
@dataclass
class CrossReferenceChange:
    cross_reference: CrossReference
    created: bool
    moved_from: str | None


def upsert_cross_reference(
    individual: Individual,
    *,
    system: str,
    external_id: str,
    source: SourceIndividual,
    source_status: str = "",
    source_modified_at: dt.datetime | None = None,
    carried_master_id: str = "",
    actor: str,
    actor_user: Any = None,
    match_rule: str = "",
    match_detail: dict[str, Any] | None = None,
) -> CrossReferenceChange:
    """Link (system, external ID) to the golden record, keeping the source's latest payload."""
    _require_atomic()
    now = timezone.now()
    xref = CrossReference.objects.select_for_update().filter(system=system, external_id=external_id).first()
    created = xref is None
    moved_from: str | None = None
    if xref is None:
        xref = CrossReference(
            individual=individual, system=system, external_id=external_id, first_seen_at=now, last_seen_at=now
        )
    elif xref.individual_id != individual.pk:
        moved_from = Individual.objects.filter(pk=xref.individual_id).values_list("master_id", flat=True).first()
        xref.individual = individual
        xref.status = "VALID"  # a source record coming back after its person was erased
    xref.last_seen_at = now
    xref.source_payload = source.raw
    if source.system_id:
        xref.system_record_id = source.system_id[:64]
    if source_status:
        xref.source_status = source_status
    if source_modified_at and (xref.source_modified_at is None or source_modified_at > xref.source_modified_at):
        xref.source_modified_at = source_modified_at
    if carried_master_id:
        xref.source_master_id = carried_master_id
    if created or moved_from:
        xref.match_rule = match_rule[:120]
        xref.match_detail = match_detail
    xref.save()
    if created:
        # The golden record's lineage was computed before this row existed: name it now.
        lineage = individual.lineage or {}
        for entry in lineage.values():
            if entry.get("system") == system and entry.get("externalId") == external_id:
                entry["crossReferenceId"] = xref.pk
        if lineage:
            Individual.objects.filter(pk=individual.pk).update(lineage=lineage)
    if created or moved_from:
        record_history(
            individual=individual,
            master_id=individual.master_id,
            action=HistoryAction.RELINK if moved_from else HistoryAction.LINK,
            obj=xref,
            actor=actor,
            actor_user=actor_user,
            before={"master_id": moved_from} if moved_from else None,
            after={"system": system, "external_id": external_id, "master_id": individual.master_id},
        )
    return CrossReferenceChange(xref, created, moved_from)


def mark_writeback(
    xref: CrossReference,
    *,
    state: str,
    master_id: str = "",
    error: str = "",
    actor: str,
) -> None:
    """Record the write-back state of a cross reference (pending, written, failed).

    Pending cross references are the write-back queue: due now, attempts reset, and
    several changes for one subscriber coalesce into the one row.
    """
    _require_atomic()
    xref.writeback_state = state
    fields = ["writeback_state", "writeback_due_at", "writeback_attempts", "updated_at"]
    if state == WritebackState.PENDING:
        xref.writeback_due_at = timezone.now()
        xref.writeback_attempts = 0
    else:
        xref.writeback_due_at = None
    if state == WritebackState.WRITTEN:
        xref.source_master_id = master_id
        xref.written_at = timezone.now()
        xref.writeback_error = ""
        xref.writeback_attempts = 0
        fields += ["source_master_id", "written_at", "writeback_error"]
        individual = xref.individual
        record_history(
            individual=individual,
            master_id=individual.master_id,
            action=HistoryAction.WRITEBACK,
            obj=xref,
            actor=actor,
            after={"system": xref.system, "external_id": xref.external_id, "master_id": master_id},
        )
    elif state == WritebackState.FAILED:
        xref.writeback_error = error[:2000]
        fields.append("writeback_error")
    xref.save(update_fields=fields)


def defer_writeback(xref: CrossReference, *, due_at: dt.datetime, error: str) -> None:
    """A transient failure: keep the write-back pending, due again at ``due_at``."""
    _require_atomic()
    xref.writeback_attempts += 1
    xref.writeback_due_at = due_at
    xref.writeback_error = error[:2000]
    xref.save(update_fields=["writeback_attempts", "writeback_due_at", "writeback_error", "updated_at"])


def set_do_not_market(
    individual: Individual, *, since: dt.datetime, source: str, actor: str, actor_user: Any = None
) -> bool:
    """Record an opt-out on the golden record (CIM doNotMarketFromUpdateDate); True when it changed.

    The earliest opt-out wins: a later repeat of the same unsubscribe changes nothing.
    """
    _require_atomic()
    if individual.do_not_market_since is not None and individual.do_not_market_since <= since:
        return False
    before = {"do_not_market_since": individual.do_not_market_since, "consent_source": individual.consent_source}
    individual.do_not_market_since = since
    individual.consent_source = source[:40]
    individual.save(update_fields=["do_not_market_since", "consent_source", "updated_at"])
    record_history(
        individual=individual,
        master_id=individual.master_id,
        action=HistoryAction.CONSENT,
        obj=individual,
        actor=actor,
        actor_user=actor_user,
        before=before,
        after={"do_not_market_since": since, "consent_source": individual.consent_source},
    )
    publish_change(
        individual,
        change_type=ChangeType.CONSENT,
        actor=actor,
        change={"doNotMarketFromUpdateDate": since, "source": individual.consent_source},
    )
    return True


def publish_change(
    individual: Individual, *, change_type: str, change: dict[str, Any] | None = None, actor: str
) -> ChangeEvent:
    """Write the outbox row for a change of ``individual`` (its CIM snapshot included)."""
    _require_atomic()
    from customers.cim import render_individual
    from customers.signals import change_recorded

    fresh = Individual.objects.prefetch_related("contact_points", "cross_references").get(pk=individual.pk)
    event = ChangeEvent.objects.create(
        master_id=individual.master_id,
        change_type=change_type,
        change={k: _jsonable(v) for k, v in (change or {}).items()},
        snapshot=render_individual(fresh),
        actor=actor[:120],
    )
    change_recorded.send(sender=ChangeEvent, change_event=event)
    return event


PERSONAL_FIELDS = ("salutation", "first_name", "middle_name", "last_name", "name_suffix", "gender")


def erase_individual(individual: Individual, *, actor: str, actor_user: Any = None) -> list[tuple[str, str]]:
    """Forget a person (GDPR): personal data scrubbed everywhere the hub keeps it, erasure recorded.

    The golden record stays as a tombstone (its master ID, the erasure date) so the
    erasure itself is on record; contact points go; cross references keep only their
    (system, external ID) and are marked invalid; history and change events lose
    their values; the source systems are told through their connectors (the write-back
    clears the master ID there). Returns the (system, external ID) pairs erased.
    """
    _require_atomic()
    from customers.signals import individual_erased

    individual = Individual.objects.select_for_update().get(pk=individual.pk)
    if individual.erased_at is not None:
        return []
    now = timezone.now()
    for name in PERSONAL_FIELDS:
        setattr(individual, name, "")
    individual.birth_date = None
    individual.erased_at = now
    individual.save()
    individual.contact_points.all().delete()
    individual.match_keys.all().delete()  # blocking keys are personal data too
    xrefs = list(individual.cross_references.select_for_update())
    for xref in xrefs:
        xref.source_payload = {}
        xref.status = "INVALID"
        xref.source_status = "erased"
        xref.save(update_fields=["source_payload", "status", "source_status", "updated_at"])
    scrubbed = {"erased": True}
    HistoryEntry.objects.filter(individual=individual).update(before=None, after=scrubbed)
    ChangeEvent.objects.filter(master_id=individual.master_id).update(snapshot=None, change=scrubbed)
    record_history(
        individual=individual,
        master_id=individual.master_id,
        action=HistoryAction.ERASE,
        obj=individual,
        actor=actor,
        actor_user=actor_user,
        after={"erased_at": now},
    )
    publish_change(individual, change_type=ChangeType.ERASED, actor=actor, change={"erasedAt": now})
    pairs = [(x.system, x.external_id) for x in xrefs]
    individual_erased.send(sender=Individual, individual=individual, source_records=pairs, actor=actor)
    return pairs


@transaction.atomic
def request_resync(individual: Individual, *, actor: str, actor_user: Any = None) -> None:
    """Note a steward's re-sync in the record's history; integrations does the work (signal)."""
    from customers.signals import resync_requested

    record_history(
        individual=individual,
        master_id=individual.master_id,
        action=HistoryAction.RESYNC,
        obj=individual,
        actor=actor,
        actor_user=actor_user,
    )
    publish_change(individual, change_type=ChangeType.RESYNC, actor=actor)
    resync_requested.send(sender=Individual, individual=individual, actor=actor)
