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

from customers.choices import ChangeType, ContactPointKind, HistoryAction, WritebackState
from customers.cim import SourceIndividual
from customers.models import ChangeEvent, ContactPoint, CrossReference, HistoryEntry, Individual

GOLDEN_FIELDS = ("salutation", "first_name", "middle_name", "last_name", "name_suffix", "birth_date", "gender")


def _require_atomic() -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("customers.actions must run inside transaction.atomic()")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
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
def lock_identity(*, system: str, external_id: str, source: SourceIndividual) -> list[str]:
    """Serialize every writer that could touch the same person.

    One transaction-scoped advisory lock per identifying key (the source record,
    each normalised email, each carried master ID), taken in sorted order so two
    writers never wait on each other in a cycle. Returns the keys locked.
    """
    _require_atomic()
    keys = {f"xref:{system}:{external_id}"}
    keys.update(f"email:{e.value_key}" for e in source.emails)
    keys.update(f"master:{m}" for m in source.master_ids)
    ordered = sorted(keys)
    with connection.cursor() as cursor:
        for key in ordered:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])
    return ordered


@dataclass
class GoldenRecordMatch:
    individual: Individual | None
    rule: str  # master_id | cross_reference | email | none
    detail: str
    unknown_master_ids: list[str] = field(default_factory=list)
    cross_reference: CrossReference | None = None


def find_golden_record(*, system: str, external_id: str, source: SourceIndividual) -> GoldenRecordMatch:
    """Exact rules, in order: a carried master ID, the cross reference, the normalised email."""
    _require_atomic()
    xref = CrossReference.objects.filter(system=system, external_id=external_id).first()
    unknown: list[str] = []
    for master_id in source.master_ids:
        individual = Individual.objects.select_for_update().filter(master_id=master_id, erased_at__isnull=True).first()
        if individual is not None:
            return GoldenRecordMatch(individual, "master_id", "carried master ID found", unknown, xref)
        unknown.append(master_id)
    if xref is not None:
        individual = Individual.objects.select_for_update().get(pk=xref.individual_id)
        if individual.erased_at is None:
            return GoldenRecordMatch(individual, "cross_reference", f"{system} record already linked", unknown, xref)
    email_keys = [e.value_key for e in source.emails]
    if email_keys:
        point = (
            ContactPoint.objects.filter(kind=ContactPointKind.EMAIL, value_key__in=email_keys)
            .order_by("individual_id")
            .first()
        )
        if point is not None:
            individual = Individual.objects.select_for_update().get(pk=point.individual_id)
            return GoldenRecordMatch(individual, "email", "same normalised email", unknown, xref)
    return GoldenRecordMatch(None, "none", "no golden record matched", unknown, xref)


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
) -> GoldenRecordChange:
    """Create the golden record, or update it with the source's non-empty values.

    Survivorship for now: the latest non-empty value wins and contact points
    accumulate (one row per normalised value).
    """
    _require_atomic()
    created = individual is None
    if individual is None:
        individual = Individual()
    before = {name: getattr(individual, name) for name in GOLDEN_FIELDS}
    changed: list[str] = []
    for name in GOLDEN_FIELDS:
        value = getattr(source, name)
        if value not in ("", None) and getattr(individual, name) != value:
            setattr(individual, name, value)
            changed.append(name)
    if source.do_not_market_since and individual.do_not_market_since is None:
        individual.do_not_market_since = source.do_not_market_since
        individual.consent_source = system
        changed.append("do_not_market_since")
    if created or changed:
        individual.save()
    added = _merge_contact_points(individual, source, system=system)
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
    elif changed:
        record_history(
            individual=individual,
            master_id=individual.master_id,
            action=HistoryAction.CONSENT if changed == ["do_not_market_since"] else HistoryAction.UPDATE,
            obj=individual,
            actor=actor,
            actor_user=actor_user,
            before={k: before.get(k) for k in changed if k in before},
            after={k: getattr(individual, k) for k in changed},
        )
    return GoldenRecordChange(individual, created, changed, added)


def _merge_contact_points(individual: Individual, source: SourceIndividual, *, system: str) -> int:
    existing = set(individual.contact_points.values_list("kind", "value_key")) if individual.pk else set()
    has_primary = {kind for kind in individual.contact_points.filter(is_primary=True).values_list("kind", flat=True)}
    today = timezone.now().date()
    new_rows: list[ContactPoint] = []

    def add(kind: str, value_key: str, **values: str) -> None:
        if (kind, value_key) in existing:
            return
        existing.add((kind, value_key))
        new_rows.append(
            ContactPoint(
                individual=individual,
                kind=kind,
                value_key=value_key,
                is_primary=kind not in has_primary,
                active_from_date=today,
                source_system=system,
                **values,
            )
        )
        has_primary.add(kind)

    for email in source.emails:
        add(ContactPointKind.EMAIL, email.value_key, email_address=email.email_address)
    for phone in source.phones:
        add(ContactPointKind.PHONE, phone.value_key, telephone_number=phone.telephone_number)
    for address in source.addresses:
        add(
            ContactPointKind.ADDRESS,
            address.value_key,
            address_line1=address.address_line1,
            city_name=address.city_name,
            postal_code_text=address.postal_code_text,
            state_province_name=address.state_province_name,
            country_name=address.country_name,
        )
    if new_rows:
        ContactPoint.objects.bulk_create(new_rows)
    return len(new_rows)


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
    xref.save()
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


def record_steward_edit(
    individual: Individual,
    *,
    before: dict[str, Any],
    changed_fields: list[str],
    contact_points_changed: bool,
    user: Any,
) -> None:
    """An edit saved in the admin: its history row and its change event, in the admin's transaction."""
    _require_atomic()
    if not changed_fields and not contact_points_changed:
        return
    actor = f"user:{user.get_username()}"
    record_history(
        individual=individual,
        master_id=individual.master_id,
        action=HistoryAction.UPDATE,
        obj=individual,
        actor=actor,
        actor_user=user,
        before={k: before.get(k) for k in changed_fields},
        after={k: getattr(individual, k) for k in changed_fields}
        | ({"contact_points": "edited"} if contact_points_changed else {}),
    )
    publish_change(
        individual,
        change_type=ChangeType.UPDATED,
        actor=actor,
        change={"changedFields": changed_fields, "contactPointsEdited": contact_points_changed, "source": "STEWARD"},
    )


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
