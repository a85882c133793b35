"""Set-based upsert of many source records at once (backfills), with the per-event exact rules.

The exact rules of ``customers.actions`` (a carried master ID, then the cross
reference, then the normalised email when the names agree: a household's shared
mailbox is not one person; an older change never overwrites a newer one), applied
to a whole batch with a handful of statements: one to take the per-person advisory
locks, three lookups, ``COPY`` for new rows and set-based updates for existing
ones, history rows included. It runs in the caller's transaction, so a batch lands
whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.utils import timezone

from customers.actions import GOLDEN_FIELDS, _require_atomic, identity_lock_names
from customers.choices import ContactPointKind, HistoryAction, WritebackState
from customers.cim import SourceIndividual
from customers.matching import KEY_EMAIL, KEY_PHONE, blocking_keys, names_agree, profile_from_source
from customers.models import (
    ChangeEvent,
    ContactPoint,
    CrossReference,
    HistoryEntry,
    Individual,
    MatchKey,
    new_master_id,
)
from customers.resolution import recompute_golden_record


@dataclass
class SourceRecord:
    """One record of a source system, as a batch carries it."""

    external_id: str
    source: SourceIndividual
    modified_at: dt.datetime | None = None
    source_status: str = ""


@dataclass
class BulkResult:
    created: int = 0
    matched: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    superseded: int = 0
    duplicates_in_batch: int = 0
    writebacks: int = 0
    linked: int = 0


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else value


_COPY_TYPES = {
    "BigAutoField": "int8",
    "BigIntegerField": "int8",
    "ForeignKey": "int8",
    "PositiveIntegerField": "int4",
    "CharField": "text",
    "TextField": "text",
    "DateField": "date",
    "DateTimeField": "timestamptz",
    "BooleanField": "bool",
    # JSON goes as its text: the server parses it into jsonb (a str typed as jsonb would be
    # stored as one JSON string).
    "JSONField": "text",
}


def _copy(model: type[Any], columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """COPY ``rows`` into ``model``'s table; column types come from the model's fields."""
    if not rows:
        return
    fields = {f.column: f for f in model._meta.concrete_fields}
    types = [_COPY_TYPES[fields[c].get_internal_type()] for c in columns]
    raw = connection.connection  # psycopg 3, inside Django's transaction
    statement = f"COPY {model._meta.db_table} ({', '.join(columns)}) FROM STDIN"
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _reserve_ids(table: str, count: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, count])
        return [row[0] for row in cursor.fetchall()]


def bulk_upsert(
    records: list[SourceRecord], *, system: str, actor: str, writeback_systems: frozenset[str] = frozenset()
) -> BulkResult:
    """Upsert a batch of source records; write-backs are queued (pending) for ``writeback_systems``."""
    _require_atomic()
    result = BulkResult()
    latest: dict[str, SourceRecord] = {}
    for record in records:
        previous = latest.get(record.external_id)
        if previous is not None:
            result.duplicates_in_batch += 1
            if previous.modified_at and record.modified_at and record.modified_at < previous.modified_at:
                continue
        latest[record.external_id] = record
    batch = list(latest.values())
    if not batch:
        return result

    # The names the per-event path locks (mailbox and phone; the name keys feed fuzzy rules a
    # backfill does not run, and would multiply a batch's locks).
    keys: set[str] = set()
    for r in batch:
        keys |= identity_lock_names(system, r.external_id, r.source, kinds={KEY_EMAIL, KEY_PHONE})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(%s::text[]) AS k",
            [sorted(keys)],
        )

    carried = {m for r in batch for m in r.source.master_ids}
    by_master = dict(
        Individual.objects.filter(master_id__in=carried, erased_at__isnull=True).values_list("master_id", "id")
    )
    xrefs = {
        x.external_id: x
        for x in CrossReference.objects.filter(system=system, external_id__in=[r.external_id for r in batch])
    }
    # A source record of an erased person starts a new golden record (the tombstone stays as it is).
    erased = set(
        Individual.objects.filter(
            pk__in={x.individual_id for x in xrefs.values()}, erased_at__isnull=False
        ).values_list("pk", flat=True)
    )
    emails = {e.value_key for r in batch for e in r.source.emails}
    by_email: dict[str, int] = {}
    for value_key, individual_id in (
        ContactPoint.objects.filter(kind=ContactPointKind.EMAIL, value_key__in=emails)
        .order_by("individual_id")
        .values_list("value_key", "individual_id")
    ):
        by_email.setdefault(value_key, individual_id)

    names = {
        pk: (first, last)
        for pk, first, last in Individual.objects.filter(pk__in=set(by_email.values())).values_list(
            "pk", "first_name", "last_name"
        )
    }
    now = timezone.now()
    # Decide who each record belongs to; new people in this batch are negative placeholders.
    owner: dict[str, int] = {}
    rule_of: dict[str, str] = {}
    new_people: dict[int, SourceRecord] = {}
    new_by_email: dict[str, int] = {}
    applied: list[SourceRecord] = []
    for record in batch:
        xref = xrefs.get(record.external_id)
        if xref and record.modified_at and xref.source_modified_at and record.modified_at < xref.source_modified_at:
            result.superseded += 1
            continue
        target = next((by_master[m] for m in record.source.master_ids if m in by_master), None)
        rule = "master_id"
        if target is None and xref is not None and xref.individual_id not in erased:
            target, rule = xref.individual_id, "cross_reference"
        if target is None:
            for email in record.source.emails:
                found = by_email.get(email.value_key) or new_by_email.get(email.value_key)
                # One mailbox is one person only when the names agree (a household shares one).
                if found is not None and _names_agree(record, found, names, new_people):
                    target, rule = found, "email"
                    break
        if target is None:
            target, rule = -(len(new_people) + 1), "none"
            new_people[target] = record
        for email in record.source.emails:
            if target < 0:
                new_by_email.setdefault(email.value_key, target)
        owner[record.external_id] = target
        rule_of[record.external_id] = rule
        result.matched[rule] += 1
        applied.append(record)

    ids = _reserve_ids(Individual._meta.db_table, len(new_people))
    real_id = dict(zip(sorted(new_people, reverse=True), ids, strict=True))
    master_ids: dict[int, str] = {}
    individual_rows = []
    history_rows: list[tuple[Any, ...]] = []
    for placeholder, record in new_people.items():
        pk, master_id, src = real_id[placeholder], new_master_id(), record.source
        master_ids[pk] = master_id
        individual_rows.append(
            (
                pk,
                master_id,
                "Individual",
                src.salutation,
                src.first_name,
                src.middle_name,
                src.last_name,
                src.name_suffix,
                src.birth_date,
                src.gender,
                src.do_not_market_since,
                system if src.do_not_market_since else "",
                "{}",
                json.dumps(_lineage(src, system, record, now)),
                now,
                now,
            )
        )
        after = {name: _jsonable(getattr(src, name)) for name in GOLDEN_FIELDS}
        history_rows.append(
            (pk, master_id, HistoryAction.CREATE, "Individual", pk, actor, None, json.dumps(after), now)
        )
    result.created = len(new_people)
    _copy(
        Individual,
        [
            "id",
            "master_id",
            "party_type",
            "salutation",
            "first_name",
            "middle_name",
            "last_name",
            "name_suffix",
            "birth_date",
            "gender",
            "do_not_market_since",
            "consent_source",
            "pins",
            "lineage",
            "created_at",
            "updated_at",
        ],
        individual_rows,
    )

    existing_ids = {owner[r.external_id] for r in applied if owner[r.external_id] > 0}
    for pk, master_id in Individual.objects.filter(pk__in=existing_ids).values_list("pk", "master_id"):
        master_ids[pk] = master_id
    _contact_points(applied, owner, real_id, existing_ids, system, now)
    result.writebacks, result.linked = _cross_references(
        applied, owner, real_id, xrefs, master_ids, system, actor, now, writeback_systems, history_rows, rule_of
    )
    _match_keys(applied, owner, real_id)
    # Golden records the hub already had: survivorship over all their source records, as per event.
    changed: dict[int, Individual] = {}
    for individual in Individual.objects.filter(pk__in=existing_ids).order_by("pk"):
        if recompute_golden_record(individual, actor=actor).changed_fields:
            changed[individual.pk] = individual
    _copy(
        HistoryEntry,
        ["individual_id", "master_id", "action", "object_type", "object_id", "actor", "before", "after", "created_at"],
        history_rows,
    )
    # Outbox rows for downstream systems, rendered when delivered (a million snapshots would not pay).
    touched = {pk: "created" for pk in real_id.values()}
    for pk in changed:
        touched.setdefault(pk, "updated")
    for record in applied:
        if record.external_id not in xrefs:  # a new link changes the record's externalIds
            pk = owner[record.external_id]
            touched.setdefault(real_id.get(pk, pk), "updated")
    _copy(
        ChangeEvent,
        ["master_id", "change_type", "change", "actor", "created_at", "fanned_out"],
        [
            (master_ids[pk], kind, json.dumps({"source": system, "bulk": True}), actor[:120], now, False)
            for pk, kind in touched.items()
        ],
    )
    if touched:
        from customers.signals import change_recorded

        change_recorded.send(sender=None, change_event=None)
    return result


def _names_agree(
    record: SourceRecord, owner_id: int, names: dict[int, tuple[str, str]], new_people: dict[int, SourceRecord]
) -> bool:
    if owner_id < 0:
        other = new_people[owner_id].source
        first, last = other.first_name, other.last_name
    else:
        first, last = names.get(owner_id, ("", ""))
    return names_agree(record.source.first_name, record.source.last_name, first, last)


def _lineage(src: SourceIndividual, system: str, record: SourceRecord, now: dt.datetime) -> dict[str, Any]:
    """A new golden record's lineage: every value comes from its one source record."""
    at = (record.modified_at or now).isoformat()
    return {
        name: {
            "system": system,
            "externalId": record.external_id,
            "crossReferenceId": None,
            "at": at,
            "rule": "only source",
        }
        for name in GOLDEN_FIELDS
        if getattr(src, name) not in ("", None)
    }


def _match_keys(applied: list[SourceRecord], owner: dict[str, int], real_id: dict[int, int]) -> None:
    """Blocking keys of the golden records this batch created (existing ones are recomputed)."""
    keys: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for record in applied:
        placeholder = owner[record.external_id]
        if placeholder < 0:
            keys[real_id[placeholder]] |= blocking_keys(profile_from_source(record.source))
    _copy(MatchKey, ["individual_id", "kind", "value"], [(pk, k, v) for pk, ks in keys.items() for k, v in sorted(ks)])


def _contact_points(
    applied: list[SourceRecord],
    owner: dict[str, int],
    real_id: dict[int, int],
    existing_ids: set[int],
    system: str,
    now: dt.datetime,
) -> None:
    present: set[tuple[int, str, str]] = set(
        ContactPoint.objects.filter(individual_id__in=existing_ids).values_list("individual_id", "kind", "value_key")
    )
    has_primary = set(
        ContactPoint.objects.filter(individual_id__in=existing_ids, is_primary=True).values_list(
            "individual_id", "kind"
        )
    )
    new_rows: list[tuple[Any, ...]] = []
    existing_rows: list[ContactPoint] = []
    today = now.date()
    for record in applied:
        pk = owner[record.external_id]
        pk = real_id[pk] if pk < 0 else pk
        src = record.source
        points = [(ContactPointKind.EMAIL, e.value_key, {"email_address": e.email_address}) for e in src.emails]
        points += [(ContactPointKind.PHONE, p.value_key, {"telephone_number": p.telephone_number}) for p in src.phones]
        points += [
            (
                ContactPointKind.ADDRESS,
                a.value_key,
                {
                    "address_line1": a.address_line1,
                    "city_name": a.city_name,
                    "postal_code_text": a.postal_code_text,
                    "state_province_name": a.state_province_name,
                    "country_name": a.country_name,
                },
            )
            for a in src.addresses
        ]
        for kind, value_key, values in points:
            if (pk, kind, value_key) in present:
                continue
            present.add((pk, kind, value_key))
            primary = (pk, kind) not in has_primary
            has_primary.add((pk, kind))
            if pk in existing_ids:
                existing_rows.append(
                    ContactPoint(
                        individual_id=pk,
                        kind=kind,
                        value_key=value_key,
                        is_primary=primary,
                        active_from_date=today,
                        source_system=system,
                        **values,
                    )
                )
                continue
            new_rows.append(
                (
                    pk,
                    kind,
                    value_key,
                    primary,
                    today,
                    values.get("email_address", ""),
                    values.get("telephone_number", ""),
                    values.get("address_line1", ""),
                    values.get("city_name", ""),
                    values.get("postal_code_text", ""),
                    values.get("state_province_name", ""),
                    values.get("country_name", ""),
                    system,
                    now,
                    now,
                )
            )
    # Brand-new people cannot collide with anything: COPY. Existing ones might (a live event).
    _copy(
        ContactPoint,
        [
            "individual_id",
            "kind",
            "value_key",
            "is_primary",
            "active_from_date",
            "email_address",
            "telephone_number",
            "address_line1",
            "city_name",
            "postal_code_text",
            "state_province_name",
            "country_name",
            "source_system",
            "created_at",
            "updated_at",
        ],
        new_rows,
    )
    if existing_rows:
        ContactPoint.objects.bulk_create(existing_rows, ignore_conflicts=True, batch_size=1000)


def _cross_references(
    applied: list[SourceRecord],
    owner: dict[str, int],
    real_id: dict[int, int],
    xrefs: dict[str, CrossReference],
    master_ids: dict[int, str],
    system: str,
    actor: str,
    now: dt.datetime,
    writeback_systems: frozenset[str],
    history_rows: list[tuple[Any, ...]],
    rule_of: dict[str, str],
) -> tuple[int, int]:
    new_rows: list[tuple[Any, ...]] = []
    updated: list[CrossReference] = []
    writebacks = 0
    for record in applied:
        pk = owner[record.external_id]
        pk = real_id[pk] if pk < 0 else pk
        master_id = master_ids[pk]
        carried = record.source.master_ids
        needs = system in writeback_systems and master_id not in carried
        writebacks += needs
        state = WritebackState.PENDING if needs else WritebackState.NOT_NEEDED
        xref = xrefs.get(record.external_id)
        payload = record.source.raw
        if xref is None:
            new_rows.append(
                (
                    pk,
                    system,
                    record.external_id,
                    record.source.system_id[:64],
                    "VALID",
                    record.source_status,
                    now,
                    now,
                    record.modified_at,
                    json.dumps(payload),
                    state,
                    carried[0] if carried else "",
                    None,
                    "",
                    now if needs else None,
                    0,
                    rule_of.get(record.external_id, ""),
                    now,
                    now,
                )
            )
            history_rows.append(
                (
                    pk,
                    master_id,
                    HistoryAction.LINK,
                    "CrossReference",
                    None,
                    actor,
                    None,
                    json.dumps({"system": system, "external_id": record.external_id, "master_id": master_id}),
                    now,
                )
            )
            continue
        if xref.individual_id != pk:
            history_rows.append(
                (
                    pk,
                    master_id,
                    HistoryAction.RELINK,
                    "CrossReference",
                    xref.pk,
                    actor,
                    json.dumps({"individual_id": xref.individual_id}),
                    json.dumps({"system": system, "external_id": record.external_id, "master_id": master_id}),
                    now,
                )
            )
            xref.individual_id = pk
        xref.last_seen_at = now
        xref.source_payload = payload
        xref.system_record_id = record.source.system_id[:64] or xref.system_record_id
        if record.source_status:
            xref.source_status = record.source_status
        if record.modified_at and (xref.source_modified_at is None or record.modified_at > xref.source_modified_at):
            xref.source_modified_at = record.modified_at
        if carried:
            xref.source_master_id = carried[0]
        if needs:
            xref.writeback_state, xref.writeback_due_at, xref.writeback_attempts = WritebackState.PENDING, now, 0
        elif xref.writeback_state != WritebackState.WRITTEN:
            xref.writeback_state = WritebackState.NOT_NEEDED
        xref.updated_at = now
        updated.append(xref)
    _copy(
        CrossReference,
        [
            "individual_id",
            "system",
            "external_id",
            "system_record_id",
            "status",
            "source_status",
            "first_seen_at",
            "last_seen_at",
            "source_modified_at",
            "source_payload",
            "writeback_state",
            "source_master_id",
            "written_at",
            "writeback_error",
            "writeback_due_at",
            "writeback_attempts",
            "match_rule",
            "created_at",
            "updated_at",
        ],
        new_rows,
    )
    if updated:
        CrossReference.objects.bulk_update(
            updated,
            [
                "individual",
                "last_seen_at",
                "source_payload",
                "system_record_id",
                "source_status",
                "source_modified_at",
                "source_master_id",
                "writeback_state",
                "writeback_due_at",
                "writeback_attempts",
                "updated_at",
            ],
            batch_size=1000,
        )
    return writebacks, len(new_rows)
