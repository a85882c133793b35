"""What stewards (and the stewardship API) do to golden records: merge, unmerge, not-a-match, pins, edits,
recompute, consent, erasure, re-sync.

Each action runs in one transaction (its own when called bare), locks the golden records
it changes, changes them through the same unit of work as the resolution engine
(``customers.resolution.store``), writes its history rows and outbox change events with
them, and leaves side effects (the master-ID write-back, erasure in other stores) to the
receivers of the signals it sends.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from customers.choices import (
    STEWARD_SYSTEM,
    CandidateStatus,
    ChangeType,
    ContactPointKind,
    CrossReferenceStatus,
    EngagementChannel,
    HistoryAction,
    MatcherStatus,
    PrivacyConsentStatus,
)
from customers.cim import MIN_YEAR, CimValidationError, parse_individual
from customers.history import jsonable, record_history, require_atomic
from customers.models import (
    ChangeEvent,
    CommunicationSubscriptionConsent,
    CrossReference,
    HistoryEntry,
    Individual,
    MatchCandidate,
    MatcherModel,
    NotAMatch,
    is_master_id,
)
from customers.resolution.store import Golden, Recomputed, UnitOfWork
from customers.resolution.survivorship import SURVIVING_FIELDS
from customers.signals import (
    cross_reference_unmerged,
    golden_records_merged,
    individual_erased,
    resync_requested,
)
from hub.sql import advisory_lock

PERSONAL_FIELDS = ("salutation", "first_name", "middle_name", "last_name", "name_suffix", "gender")
_CIM_NAMES = {
    "salutation": "salutation",
    "first_name": "firstName",
    "middle_name": "middleName",
    "last_name": "lastName",
    "name_suffix": "nameSuffix",
    "birth_date": "birthDate",
    "gender": "gender",
}


class ResolutionError(ValueError):
    """A steward or API request that cannot be done (the message says why)."""


def resolve_master_id(master_id: str) -> Individual | None:
    """The golden record a master ID stands for today: merged IDs redirect to their survivor.

    None for a value without a master ID's shape: it names no record (and some such values,
    NUL among them, PostgreSQL refuses outright).
    """
    if not is_master_id(master_id):
        return None
    individual = Individual.objects.filter(master_id=master_id).first()
    if individual is not None and individual.merged_into_id is not None:
        # Redirects are kept one hop deep (merge re-points older redirects at the new survivor).
        individual = Individual.objects.get(pk=individual.merged_into_id)
    return individual


def is_active(individual: Individual) -> bool:
    return individual.merged_into_id is None and individual.erased_at is None


def open_unit_of_work(*individuals: Individual) -> tuple[UnitOfWork, list[Golden]]:
    """A unit of work holding these golden records, locked (advisory by master ID, then rows by id)."""
    require_atomic()
    advisory_lock(f"master:{i.master_id}" for i in individuals)
    ids = sorted({i.pk for i in individuals})
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {Individual._meta.db_table} WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE", [ids]
        )
    work = UnitOfWork()
    work.load_goldens(ids)
    return work, [work.golden(i.pk) for i in individuals]


def _fresh(golden: Golden) -> Individual:
    return Individual.objects.get(pk=golden.pk)


def _snapshot(golden: Golden) -> dict[str, Any]:
    return {name: golden.values[name] for name in SURVIVING_FIELDS} | {"master_id": golden.master_id}


def _user_id(actor_user: Any) -> int | None:
    return getattr(actor_user, "pk", None)


# ---------------------------------------------------------------------------
# Merge, unmerge, not-a-match
# ---------------------------------------------------------------------------
@transaction.atomic
def merge_individuals(
    a: Individual,
    b: Individual,
    *,
    actor: str,
    actor_user: Any = None,
    rule: str = "steward",
    candidate: MatchCandidate | None = None,
) -> Individual:
    """Merge two golden records: the older master ID survives, the other redirects to it forever."""
    if a.pk == b.pk:
        raise ResolutionError("a golden record cannot be merged with itself")
    work, (ga, gb) = open_unit_of_work(a, b)
    for golden in (ga, gb):
        if not golden.active:
            raise ResolutionError(f"{golden.master_id} is merged or erased and cannot be merged again")
    survivor, retired = sorted((ga, gb), key=lambda g: (g.created_at, g.pk))
    now = timezone.now()
    user = _user_id(actor_user)
    before = {"survivor": _snapshot(survivor), "retired": _snapshot(retired)}
    moved = [(r.system, r.external_id) for r in retired.sources]
    for record in list(retired.sources):
        work.move_source(record, survivor)
    pins = dict(survivor.pins or {})
    for name, pin in (retired.pins or {}).items():
        pins.setdefault(name, pin)
    survivor.set("pins", pins)
    since = retired.values["do_not_market_since"]
    if since and (survivor.values["do_not_market_since"] is None or since < survivor.values["do_not_market_since"]):
        survivor.set("do_not_market_since", since)
        survivor.set("consent_source", retired.values["consent_source"])
    retired.set("merged_into_id", survivor.pk)
    retired.set("merged_at", now)
    # Older redirects follow, so every retired ID resolves in one hop.
    earlier = list(Individual.objects.filter(merged_into_id=retired.pk).values_list("pk", flat=True))
    work.load_goldens(earlier)
    for pk in earlier:
        work.golden(pk).set("merged_into_id", survivor.pk)
    work.recompute(survivor, actor=actor, now=now, history_action=None)
    work.recompute(retired, actor=actor, now=now, history_action=None)
    # The retired record's list consents go with its sources (before the flush renders the snapshot).
    _carry_subscription_consents(retired.pk, survivor.pk)
    CommunicationSubscriptionConsent.objects.filter(individual_id=retired.pk).delete()
    after = {"survivor": _snapshot(survivor), "retired_master_id": retired.master_id, "rule": rule}
    for golden in (survivor, retired):
        work.record(
            golden,
            HistoryAction.MERGE,
            actor=actor,
            now=now,
            object_id=survivor.pk,
            actor_user_id=user,
            before=before,
            after=after,
        )
    work.publish(
        survivor,
        ChangeType.MERGED,
        actor=actor,
        now=now,
        change={
            "survivingId": survivor.master_id,
            "retiredIds": [retired.master_id],
            "rule": rule,
            "movedCrossReferences": [{"system": s, "externalId": e} for s, e in moved],
        },
    )
    work.flush(now)
    _carry_pair_memory(retired.pk, survivor.pk, actor=actor, candidate=candidate)
    result = _fresh(survivor)
    golden_records_merged.send(sender=Individual, survivor=result, retired=_fresh(retired), actor=actor)
    return result


def not_a_match_with(individual_id: int) -> set[int]:
    pairs = NotAMatch.objects.filter(Q(left_id=individual_id) | Q(right_id=individual_id)).values_list(
        "left_id", "right_id"
    )
    return {right if left == individual_id else left for left, right in pairs}


def _carry_pair_memory(retired_id: int, survivor_id: int, *, actor: str, candidate: MatchCandidate | None) -> None:
    """Not-a-match pairs of the retired record now hold for the survivor; its open candidates close."""
    now = timezone.now()
    for other in not_a_match_with(retired_id) - {survivor_id}:
        left, right = sorted((survivor_id, other))
        NotAMatch.objects.get_or_create(left_id=left, right_id=right, defaults={"actor": actor[:120]})
    NotAMatch.objects.filter(Q(left_id=retired_id) | Q(right_id=retired_id)).delete()
    if candidate is not None:
        MatchCandidate.objects.filter(pk=candidate.pk).update(
            status=CandidateStatus.MERGED, decided_at=now, decided_by=actor[:120]
        )
    MatchCandidate.objects.filter(Q(left_id=retired_id) | Q(right_id=retired_id), status=CandidateStatus.OPEN).update(
        status=CandidateStatus.CLOSED, decided_at=now, decided_by=actor[:120]
    )


@transaction.atomic
def unmerge_cross_reference(xref: CrossReference, *, actor: str, actor_user: Any = None) -> Individual:
    """Split one source record off into a golden record of its own, with a new master ID."""
    owner = Individual.objects.get(pk=CrossReference.objects.values_list("individual_id", flat=True).get(pk=xref.pk))
    work, (original,) = open_unit_of_work(owner)
    if not original.active:
        raise ResolutionError("the cross reference's golden record is merged or erased")
    if len(original.sources) < 2:
        raise ResolutionError("the golden record has only this source record: there is nothing to split")
    record = work.source(xref.system, xref.external_id)
    assert record is not None  # loaded with its golden record
    now = timezone.now()
    user = _user_id(actor_user)
    before = _snapshot(original)
    work.reserve(goldens=1)
    split = work.new_golden(now)
    work.move_source(record, split)
    record.match_rule = "unmerged"
    record.match_detail = {"unmergedFrom": original.master_id, "by": actor}
    record.updated_at = now
    work.recompute(original, actor=actor, now=now, history_action=None)
    work.recompute(split, actor=actor, now=now, history_action=None)
    if original.values["do_not_market_since"] and original.values["consent_source"] == record.system:
        split.set("do_not_market_since", original.values["do_not_market_since"])
        split.set("consent_source", original.values["consent_source"])
    # Lists of the split record's system may be its own: the split keeps their consents too
    # (written before the flush creates the split's row: the foreign key is checked at commit).
    _carry_subscription_consents(original.pk, split.pk, system=record.system)
    change = {
        "originalId": original.master_id,
        "splitId": split.master_id,
        "crossReference": {"system": record.system, "externalId": record.external_id},
    }
    for golden in (original, split):
        work.record(
            golden,
            HistoryAction.UNMERGE,
            actor=actor,
            now=now,
            actor_user_id=user,
            object_type="CrossReference",
            object_id=record.pk,
            before=before,
            after=_snapshot(golden) | {"system": record.system, "external_id": record.external_id},
        )
        work.publish(golden, ChangeType.UNMERGED, actor=actor, now=now, change=change)
    work.flush(now)
    # The split was a steward's decision: the rules must not merge the two back on their own.
    left, right = sorted((original.pk, split.pk))
    NotAMatch.objects.get_or_create(left_id=left, right_id=right, defaults={"actor": actor[:120], "reason": "unmerged"})
    result = _fresh(split)
    cross_reference_unmerged.send(
        sender=Individual,
        cross_reference=CrossReference.objects.get(pk=record.pk),
        original=_fresh(original),
        split=result,
        actor=actor,
    )
    return result


@transaction.atomic
def mark_not_a_match(
    a: Individual, b: Individual, *, actor: str, actor_user: Any = None, reason: str = ""
) -> NotAMatch:
    """Remember that two golden records are different people; open candidates for the pair close."""
    if a.pk == b.pk:
        raise ResolutionError("a golden record is always a match for itself")
    left, right = sorted((a.pk, b.pk))
    pair, _ = NotAMatch.objects.get_or_create(
        left_id=left, right_id=right, defaults={"actor": actor[:120], "reason": reason[:200]}
    )
    MatchCandidate.objects.filter(left_id=left, right_id=right, status=CandidateStatus.OPEN).update(
        status=CandidateStatus.NOT_A_MATCH, decided_at=timezone.now(), decided_by=actor[:120]
    )
    for individual, other in ((a, b), (b, a)):
        record_history(
            individual=individual,
            master_id=individual.master_id,
            action=HistoryAction.NOT_A_MATCH,
            obj=pair,
            actor=actor,
            actor_user=actor_user,
            after={"other": other.master_id, "reason": reason},
        )
    return pair


@transaction.atomic
def clear_not_a_match(a: Individual, b: Individual, *, actor: str, actor_user: Any = None) -> bool:
    left, right = sorted((a.pk, b.pk))
    deleted, _ = NotAMatch.objects.filter(left_id=left, right_id=right).delete()
    if deleted:
        for individual, other in ((a, b), (b, a)):
            record_history(
                individual=individual,
                master_id=individual.master_id,
                action=HistoryAction.NOT_A_MATCH,
                obj=None,
                actor=actor,
                actor_user=actor_user,
                before={"other": other.master_id},
                after={"cleared": True},
            )
    return bool(deleted)


@transaction.atomic
def skip_candidate(candidate: MatchCandidate, *, actor: str) -> None:
    MatchCandidate.objects.filter(pk=candidate.pk, status=CandidateStatus.OPEN).update(
        status=CandidateStatus.SKIPPED, decided_at=timezone.now(), decided_by=actor[:120]
    )


# ---------------------------------------------------------------------------
# Pins, edits, recompute
# ---------------------------------------------------------------------------
@transaction.atomic
def pin_value(individual: Individual, attribute: str, value: Any, *, actor: str, actor_user: Any = None) -> Individual:
    """Pin a golden value: it wins over every source until unpinned."""
    if attribute not in SURVIVING_FIELDS:
        raise ResolutionError(f"{attribute} cannot be pinned; pinnable: {', '.join(SURVIVING_FIELDS)}")
    work, (golden,) = open_unit_of_work(individual)
    if not golden.active:
        raise ResolutionError("merged or erased golden records cannot be changed")
    value = pinnable_value(attribute, value)
    now = timezone.now()
    before = golden.values[attribute]
    golden.set(
        "pins", dict(golden.pins or {}) | {attribute: {"value": jsonable(value), "by": actor, "at": now.isoformat()}}
    )
    work.recompute(golden, actor=actor, now=now, history_action=None)
    work.record(
        golden,
        HistoryAction.PIN,
        actor=actor,
        now=now,
        actor_user_id=_user_id(actor_user),
        before={attribute: before},
        after={attribute: value},
    )
    work.publish(
        golden, ChangeType.UPDATED, actor=actor, now=now, change={"pinned": attribute, "source": STEWARD_SYSTEM}
    )
    work.flush(now)
    return _fresh(golden)


# Control characters (NUL among them, which PostgreSQL text cannot hold) and lone surrogates.
_UNPINNABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def pinnable_value(attribute: str, value: Any) -> Any:
    """The value to pin for ``attribute``, or ValueError saying why it cannot be one.

    Text must fit the golden record's column (its ``max_length``, read from the model): a
    longer pin could never be stored.
    """
    if not isinstance(value, str):
        return value
    if _UNPINNABLE.search(value):
        raise ValueError("must not contain control characters")
    if attribute != "birth_date":
        max_length = Individual._meta.get_field(attribute).max_length
        if max_length is not None and len(value) > max_length:
            raise ValueError(f"must be at most {max_length} characters for {attribute}")
        return value
    if not value:
        return None
    birth_date = dt.date.fromisoformat(value)
    if birth_date.year < MIN_YEAR or birth_date > timezone.now().date():
        raise ValueError(f"must be a date from {MIN_YEAR}-01-01 to today")
    return birth_date


@transaction.atomic
def unpin_value(individual: Individual, attribute: str, *, actor: str, actor_user: Any = None) -> Individual:
    work, (golden,) = open_unit_of_work(individual)
    if attribute not in (golden.pins or {}):
        return _fresh(golden)
    now = timezone.now()
    before = golden.values[attribute]
    golden.set("pins", {k: v for k, v in golden.pins.items() if k != attribute})
    work.recompute(golden, actor=actor, now=now, history_action=None)
    work.record(
        golden,
        HistoryAction.UNPIN,
        actor=actor,
        now=now,
        actor_user_id=_user_id(actor_user),
        before={attribute: before},
        after={attribute: golden.values[attribute]},
    )
    work.publish(
        golden, ChangeType.UPDATED, actor=actor, now=now, change={"unpinned": attribute, "source": STEWARD_SYSTEM}
    )
    work.flush(now)
    return _fresh(golden)


@transaction.atomic
def steward_edit(
    individual: Individual,
    values: dict[str, Any],
    *,
    actor: str,
    actor_user: Any = None,
    emails: list[str] | None = None,
    phones: list[str] | None = None,
) -> Recomputed:
    """A steward's edit, kept as the steward's own source record (the sources stay untouched)."""
    work, (golden,) = open_unit_of_work(individual)
    if not golden.active:
        raise ResolutionError("merged or erased golden records cannot be changed")
    now = timezone.now()
    record = work.source(STEWARD_SYSTEM, golden.master_id)
    payload = dict(record.payload) if record is not None else {}
    for name, value in values.items():
        if name not in _CIM_NAMES:
            raise ResolutionError(f"{name} is not an editable attribute")
        payload[_CIM_NAMES[name]] = jsonable(value) if value not in ("", None) else None
    points = [p for p in payload.get("contactPoints", []) if isinstance(p, dict)]
    if emails is not None:
        points = [p for p in points if p.get("contactPointType") != ContactPointKind.EMAIL]
        points += [{"contactPointType": ContactPointKind.EMAIL, "emailAddress": e} for e in emails]
    if phones is not None:
        points = [p for p in points if p.get("contactPointType") != ContactPointKind.PHONE]
        points += [{"contactPointType": ContactPointKind.PHONE, "telephoneNumber": p} for p in phones]
    payload["contactPoints"] = points
    try:
        source = parse_individual(payload)
    except CimValidationError as exc:
        raise ResolutionError(str(exc)) from None
    if record is None:
        work.reserve(sources=1)
        record = work.new_source(STEWARD_SYSTEM, golden.master_id, golden, now)
        record.match_rule = "steward"
    work.update_source(record, source, last_seen_at=now, source_modified_at=now, updated_at=now)
    recomputed = work.recompute(golden, actor=actor, now=now, actor_user_id=_user_id(actor_user))
    work.publish(
        golden,
        ChangeType.UPDATED,
        actor=actor,
        now=now,
        change={"changedFields": recomputed.changed_fields, "source": STEWARD_SYSTEM},
    )
    work.flush(now)
    return recomputed


def _publish_if_changed(work: UnitOfWork, golden: Golden, recomputed: Recomputed, *, actor: str, now: Any) -> None:
    """Tell downstream systems about a recompute that changed the golden record (nothing otherwise)."""
    if recomputed.changed_fields or recomputed.added_contact_points or recomputed.removed_contact_points:
        work.publish(
            golden,
            ChangeType.UPDATED,
            actor=actor,
            now=now,
            change={"changedFields": recomputed.changed_fields, "source": "recompute"},
        )


@transaction.atomic
def recompute_golden_record(individual: Individual, *, actor: str, actor_user: Any = None) -> Recomputed:
    """Set the golden values again from the sources (after a rule change, or a source marked invalid)."""
    work, (golden,) = open_unit_of_work(individual)
    now = timezone.now()
    recomputed = work.recompute(golden, actor=actor, now=now, actor_user_id=_user_id(actor_user))
    _publish_if_changed(work, golden, recomputed, actor=actor, now=now)
    work.flush(now)
    return recomputed


@transaction.atomic
def set_source_status(xref: CrossReference, status: str, *, actor: str, actor_user: Any = None) -> Recomputed | None:
    """Mark a source record valid or invalid: an invalid one stops supplying its golden record.

    The golden record is recomputed from the sources that remain. None when the status was
    already ``status``.
    """
    if status not in CrossReferenceStatus.values:
        raise ResolutionError(f"{status} is not a cross reference status")
    work, (golden,) = open_unit_of_work(xref.individual)
    if not golden.active:
        raise ResolutionError("merged or erased golden records cannot be changed")
    record = work.source(xref.system, xref.external_id)
    if record is None or record.individual_id != golden.pk:
        raise ResolutionError("this source record belongs to another golden record now")
    if record.status == status:
        return None
    now = timezone.now()
    user = _user_id(actor_user)
    before = record.status
    work.update_source(record, status=status, updated_at=now)
    work.record(
        golden,
        HistoryAction.UPDATE,
        actor=actor,
        now=now,
        object_type="CrossReference",
        object_id=record.pk,
        actor_user_id=user,
        before={"status": before},
        after={"status": status, "system": record.system, "external_id": record.external_id},
    )
    recomputed = work.recompute(golden, actor=actor, now=now, actor_user_id=user)
    _publish_if_changed(work, golden, recomputed, actor=actor, now=now)
    work.flush(now)
    return recomputed


# ---------------------------------------------------------------------------
# Consent, erasure, re-sync
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OptOut:
    """An opt-out to record on a golden record.

    Without ``subscription`` it is an opt-out of all marketing (CIM doNotMarketFromUpdateDate);
    with one, ``(system, list ID)``, of that list only, on ``channel``: a list consent
    (CommunicationSubscriptionConsent) that leaves the person marketable otherwise.
    """

    individual_id: int
    since: dt.datetime
    source: str
    actor: str
    subscription: tuple[str, str] | None = None
    channel: str = EngagementChannel.EMAIL
    actor_user_id: int | None = None  # the steward who recorded it, if one did


def record_opt_outs(opt_outs: list[OptOut]) -> int:
    """Record opt-outs on their golden records, set-based; returns how many records changed.

    The earliest opt-out wins (per record, and per list and channel): a later repeat of the
    same unsubscribe changes nothing. Each change writes a history row (before and after)
    and a change event. Runs in the caller's transaction.
    """
    require_atomic()
    if not opt_outs:
        return 0
    individuals = list(Individual.objects.filter(pk__in={o.individual_id for o in opt_outs}).only("pk", "master_id"))
    if not individuals:
        return 0
    work, _ = open_unit_of_work(*individuals)
    changed: set[int] = set()
    wanted: dict[tuple[int, str, str, str], tuple[OptOut, dict[str, Any] | None]] = {}
    listed = [o for o in opt_outs if o.subscription is not None and o.individual_id in work.goldens]
    existing = _subscription_consents({o.individual_id for o in listed})
    for opt_out in sorted(opt_outs, key=lambda o: o.since):
        if opt_out.individual_id not in work.goldens:
            continue
        golden = work.golden(opt_out.individual_id)
        now = timezone.now()
        if opt_out.subscription is not None:
            key = (golden.pk, opt_out.subscription[0][:40], opt_out.subscription[1][:64], opt_out.channel)
            current = wanted[key][0] if key in wanted else None
            held = existing.get(key)
            if current is not None or (
                held is not None
                and held["status"] == PrivacyConsentStatus.OPT_OUT
                and held["effective_from"] <= opt_out.since
            ):
                continue  # opted out of this list already, as early or earlier
            wanted[key] = (opt_out, held)
            before = _consent_values(key, held) if held is not None else None
            opted_out = {
                "status": PrivacyConsentStatus.OPT_OUT,
                "effective_from": opt_out.since,
                "capture_source": opt_out.source[:40],
            }
            after = _consent_values(key, opted_out)
            work.record(
                golden,
                HistoryAction.CONSENT,
                actor=opt_out.actor,
                now=now,
                actor_user_id=opt_out.actor_user_id,
                before=before,
                after=after,
            )
            work.publish(golden, ChangeType.CONSENT, actor=opt_out.actor, now=now, change=after)
            changed.add(golden.pk)
            continue
        current = golden.values["do_not_market_since"]
        if current is not None and current <= opt_out.since:
            continue
        before = {"do_not_market_since": current, "consent_source": golden.values["consent_source"]}
        golden.set("do_not_market_since", opt_out.since)
        golden.set("consent_source", opt_out.source[:40])
        after = {"do_not_market_since": opt_out.since, "consent_source": opt_out.source[:40]}
        work.record(
            golden,
            HistoryAction.CONSENT,
            actor=opt_out.actor,
            now=now,
            actor_user_id=opt_out.actor_user_id,
            before=before,
            after=after,
        )
        work.publish(
            golden,
            ChangeType.CONSENT,
            actor=opt_out.actor,
            now=now,
            change={"doNotMarketFromUpdateDate": opt_out.since, "source": opt_out.source[:40]},
        )
        changed.add(golden.pk)
    if wanted:
        # Written before the flush, so the change events' snapshots show them.
        CommunicationSubscriptionConsent.objects.bulk_create(
            [
                CommunicationSubscriptionConsent(
                    individual_id=individual_id,
                    system=system,
                    subscription_id=subscription_id,
                    channel=channel,
                    status=PrivacyConsentStatus.OPT_OUT,
                    effective_from=opt_out.since,
                    capture_source=opt_out.source[:40],
                )
                for (individual_id, system, subscription_id, channel), (opt_out, _) in wanted.items()
            ],
            update_conflicts=True,
            unique_fields=["individual", "system", "subscription_id", "channel"],
            update_fields=["status", "effective_from", "capture_source", "updated_at"],
        )
    work.flush()
    return len(changed)


@transaction.atomic
def record_steward_opt_out(individual: Individual, *, actor: str, actor_user: Any = None) -> bool:
    """A steward records that the person opted out of all marketing (now); False if one was held already."""
    if not is_active(individual):
        raise ResolutionError("merged or erased golden records cannot be changed")
    opt_out = OptOut(individual.pk, timezone.now(), STEWARD_SYSTEM, actor, actor_user_id=_user_id(actor_user))
    return record_opt_outs([opt_out]) > 0


def _subscription_consents(individual_ids: set[int]) -> dict[tuple[int, str, str, str], dict[str, Any]]:
    """The list consents these golden records hold, locked (their records are locked already)."""
    if not individual_ids:
        return {}
    rows = (
        CommunicationSubscriptionConsent.objects.select_for_update()
        .filter(individual_id__in=individual_ids)
        .values("individual_id", "system", "subscription_id", "channel", "status", "effective_from", "capture_source")
    )
    return {(r["individual_id"], r["system"], r["subscription_id"], r["channel"]): r for r in rows}


def _consent_values(key: tuple[int, str, str, str], values: dict[str, Any]) -> dict[str, Any]:
    """A list consent as history rows and change events show it."""
    _, system, subscription_id, channel = key
    return {
        "communicationSubscription": f"{system}:{subscription_id}",
        "channel": channel,
        "status": values["status"],
        "effective_from": values["effective_from"],
        "consent_source": values["capture_source"],
    }


def _carry_subscription_consents(from_id: int, to_id: int, *, system: str | None = None) -> None:
    """Copy ``from_id``'s list consents (of ``system`` only, if given) onto ``to_id``: opt-outs win.

    An opt-out the target holds already stays, keeping the earlier date; otherwise the
    source's consent is taken.
    """
    rows = CommunicationSubscriptionConsent.objects.filter(individual_id=from_id)
    if system is not None:
        rows = rows.filter(system=system)
    held = {
        (c.system, c.subscription_id, c.channel): c
        for c in CommunicationSubscriptionConsent.objects.filter(individual_id=to_id)
    }
    for consent in rows:
        target = held.get((consent.system, consent.subscription_id, consent.channel))
        if target is None:
            consent.pk = None
            consent.individual_id = to_id
            consent.save()
            continue
        opted_out = PrivacyConsentStatus.OPT_OUT
        earlier = consent.status != opted_out or target.effective_from <= consent.effective_from
        if not (target.status == opted_out and earlier):
            target.status, target.effective_from = consent.status, consent.effective_from
            target.capture_source = consent.capture_source
            target.save(update_fields=["status", "effective_from", "capture_source", "updated_at"])


def erase_individual(individual: Individual, *, actor: str, actor_user: Any = None) -> list[tuple[str, str]]:
    """Forget a person (GDPR): personal data scrubbed everywhere the hub keeps it, erasure recorded.

    The golden record stays as a tombstone (its master ID, the erasure date) so the
    erasure itself is on record; contact points and blocking keys go; cross references
    keep only their (system, external ID) and are marked invalid; history and change
    events lose their values; the source systems are told through their connectors (the
    write-back clears the master ID there). Runs in the caller's transaction. Returns the
    (system, external ID) pairs erased.
    """
    work, (golden,) = open_unit_of_work(individual)
    if golden.erased_at is not None:
        return []
    now = timezone.now()
    for name in PERSONAL_FIELDS:
        golden.set(name, "")
    golden.set("birth_date", None)
    golden.set("erased_at", now)
    for record in golden.sources:
        work.update_source(
            record, payload={}, status=CrossReferenceStatus.INVALID, source_status="erased", updated_at=now
        )
        record._parsed_known = False
    work.recompute(golden, actor=actor, now=now, history_action=None)
    scrubbed = {"erased": True}
    HistoryEntry.objects.filter(individual_id=golden.pk).update(before=None, after=scrubbed)
    ChangeEvent.objects.filter(master_id=golden.master_id).update(snapshot=None, change=scrubbed)
    work.record(
        golden, HistoryAction.ERASE, actor=actor, now=now, actor_user_id=_user_id(actor_user), after={"erased_at": now}
    )
    work.publish(golden, ChangeType.ERASED, actor=actor, now=now, change={"erasedAt": now})
    work.flush(now)
    pairs = [(r.system, r.external_id) for r in golden.sources]
    individual_erased.send(sender=Individual, individual=_fresh(golden), source_records=pairs, actor=actor)
    return pairs


@transaction.atomic
def request_resync(individual: Individual, *, actor: str, actor_user: Any = None) -> None:
    """Note a steward's re-sync in the record's history; integrations does the work (signal)."""
    work, (golden,) = open_unit_of_work(individual)
    now = timezone.now()
    work.record(golden, HistoryAction.RESYNC, actor=actor, now=now, actor_user_id=_user_id(actor_user))
    work.publish(golden, ChangeType.RESYNC, actor=actor, now=now)
    work.flush(now)
    resync_requested.send(sender=Individual, individual=_fresh(golden), actor=actor)


def activate_matcher_model(row: MatcherModel, *, actor: str) -> MatcherModel | None:
    """Make ``row`` the active model; the one active before is retired (and can be activated again)."""
    with transaction.atomic():
        locked = MatcherModel.objects.select_for_update().get(pk=row.pk)
        previous = MatcherModel.objects.select_for_update().filter(status=MatcherStatus.ACTIVE).exclude(pk=row.pk)
        retired = previous.first()
        if retired is not None:
            retired.status = MatcherStatus.RETIRED
            retired.save(update_fields=["status"])  # saved one by one: the change log keeps each
        locked.status = MatcherStatus.ACTIVE
        locked.activated_at = timezone.now()
        locked.activated_by = actor[:120]
        locked.save(update_fields=["status", "activated_at", "activated_by"])
    return retired


def retire_matcher_model(row: MatcherModel) -> None:
    """Back to the rules alone: the active model is retired."""
    with transaction.atomic():
        locked = MatcherModel.objects.select_for_update().get(pk=row.pk)
        if locked.status == MatcherStatus.ACTIVE:
            locked.status = MatcherStatus.RETIRED
            locked.save(update_fields=["status"])


__all__ = [
    "OptOut",
    "ResolutionError",
    "activate_matcher_model",
    "clear_not_a_match",
    "erase_individual",
    "is_active",
    "mark_not_a_match",
    "merge_individuals",
    "not_a_match_with",
    "pin_value",
    "pinnable_value",
    "recompute_golden_record",
    "record_opt_outs",
    "record_steward_opt_out",
    "request_resync",
    "resolve_master_id",
    "retire_matcher_model",
    "set_source_status",
    "skip_candidate",
    "steward_edit",
    "unmerge_cross_reference",
    "unpin_value",
]
