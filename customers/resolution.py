"""Entity resolution writes: match keys, survivorship, merge, unmerge, not-a-match, pins.

Like ``customers.actions``, every function runs in the caller's transaction (merge,
unmerge and the steward actions open their own when called bare), writes its
history row and its outbox change event in it, and leaves side effects (the
master-ID write-back) to receivers of the signals it sends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from customers.actions import _jsonable, _require_atomic, publish_change, record_history
from customers.choices import (
    STEWARD_SYSTEM,
    CandidateStatus,
    ChangeType,
    ContactPointKind,
    CrossReferenceStatus,
    HistoryAction,
)
from customers.cim import CimValidationError, SourceIndividual, parse_individual
from customers.matching import (
    OUTCOME_AUTO,
    OUTCOME_NONE,
    OUTCOME_SUSPECT,
    Decision,
    MatchProfile,
    RuleSpec,
    add_person,
    blocking_keys,
    decide,
    parse_criteria,
    profile_from_source,
    rank,
)
from customers.models import (
    ContactPoint,
    CrossReference,
    Individual,
    MatchCandidate,
    MatchKey,
    MatchRule,
    NotAMatch,
    SurvivorshipRule,
)
from customers.survivorship import SURVIVING_FIELDS, SourceValues, Strategy, compute, contact_points

# At most this many golden records are compared with one incoming record, however common its keys,
# and at most MAX_SUSPECTS pairs (the best) are queued for review from one record.
MAX_CANDIDATES = 60
MAX_SUSPECTS = 5


class ResolutionError(ValueError):
    """A steward or API request that cannot be done (the message says why)."""


def resolve_master_id(master_id: str) -> Individual | None:
    """The golden record a master ID stands for today: merged IDs redirect to their survivor."""
    individual = Individual.objects.filter(master_id=master_id).first()
    if individual is not None and individual.merged_into_id is not None:
        # Redirects are kept one hop deep (merge re-points older redirects at the new survivor).
        individual = Individual.objects.get(pk=individual.merged_into_id)
    return individual


def is_active(individual: Individual) -> bool:
    return individual.merged_into_id is None and individual.erased_at is None


# ---------------------------------------------------------------------------
# Rules as data
# ---------------------------------------------------------------------------
def rule_spec(rule: MatchRule) -> RuleSpec:
    return RuleSpec(rule.name, rule.outcome, parse_criteria(rule.criteria), rule.pk)


def load_rules() -> list[RuleSpec]:
    specs = []
    for rule in MatchRule.objects.filter(enabled=True).order_by("priority", "id"):
        try:
            specs.append(rule_spec(rule))
        except ValueError:
            continue  # the admin refuses invalid criteria; a hand-edited bad row is skipped, not fatal
    return specs


def load_strategies() -> dict[str, Strategy]:
    return {r.attribute: Strategy(r.strategy, tuple(r.priority_list)) for r in SurvivorshipRule.objects.all()}


# ---------------------------------------------------------------------------
# Profiles, keys, candidates
# ---------------------------------------------------------------------------
# Parsed payloads and their match profiles, per cross reference version: a worker compares the
# same popular candidates again and again, and parsing (E.164 above all) dominates a comparison.
_PARSED: dict[tuple[int, Any], tuple[SourceIndividual, MatchProfile] | None] = {}
_PARSED_MAX = 20_000


def _parsed_with_profile(xref: CrossReference) -> tuple[SourceIndividual, MatchProfile] | None:
    key = (xref.pk, xref.updated_at)
    if xref.pk is not None and key in _PARSED:
        return _PARSED[key]
    try:
        source = parse_individual(xref.source_payload or {})
        result: tuple[SourceIndividual, MatchProfile] | None = (source, profile_from_source(source))
    except CimValidationError:
        result = None
    if xref.pk is not None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = result
    return result


def _parsed(xref: CrossReference) -> SourceIndividual | None:
    parsed = _parsed_with_profile(xref)
    return parsed[0] if parsed else None


def _profile_of(source: SourceValues) -> MatchProfile:
    if source.cross_reference_id is not None and source.changed_key is not None:
        cached = _PARSED.get((source.cross_reference_id, source.changed_key))
        if cached is not None:
            return cached[1]
    return profile_from_source(source.source)


def source_values(individual: Individual, *, incoming: SourceValues | None = None) -> list[SourceValues]:
    """The valid source records of ``individual``, with ``incoming`` standing in for its own row."""
    result = []
    for xref in CrossReference.objects.filter(individual=individual, status=CrossReferenceStatus.VALID):
        if incoming is not None and (xref.system, xref.external_id) == (incoming.system, incoming.external_id):
            continue
        parsed = _parsed(xref)
        if parsed is not None:
            changed = xref.source_modified_at or xref.last_seen_at
            result.append(SourceValues(xref.system, xref.external_id, xref.pk, changed, parsed, xref.updated_at))
    if incoming is not None:
        result.append(incoming)
    return result


def golden_profile(individual: Individual, sources: list[SourceValues] | None = None) -> MatchProfile:
    """Everything the golden record and its sources hold: a candidate is compared on all of it."""
    # Contact points come from the sources (kept all), so the sources and the golden values say it all.
    profile = MatchProfile()
    for source in sources if sources is not None else source_values(individual):
        profile.update(_profile_of(source))
    add_person(
        profile,
        first_name=individual.first_name,
        last_name=individual.last_name,
        birth_date=individual.birth_date,
        gender=individual.gender,
        name_suffix=individual.name_suffix,
    )
    return profile


def refresh_match_keys(individual: Individual, profile: MatchProfile | None = None) -> int:
    """Replace the record's blocking keys with those of its current profile."""
    keys = blocking_keys(profile or golden_profile(individual)) if is_active(individual) else set()
    MatchKey.objects.filter(individual=individual).delete()
    MatchKey.objects.bulk_create([MatchKey(individual=individual, kind=k, value=v) for k, v in sorted(keys)])
    return len(keys)


def lock_keys(keys: set[tuple[str, str]]) -> None:
    """Serialize writers whose records share a blocking key (sorted: no lock cycles)."""
    _require_atomic()
    with connection.cursor() as cursor:
        for kind, value in sorted(keys):
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"key:{kind}:{value}"])


# Rows read per blocking key: a key many records share (a placeholder phone, a family mailbox)
# cannot crowd out the records that share the incoming record's other keys.
PER_KEY = 50


def candidate_ids(keys: set[tuple[str, str]], *, exclude: set[int] = frozenset()) -> list[int]:
    """Golden records sharing at least one blocking key, most keys shared first, bounded.

    One LIMITed, ordered lookup per key (a UNION ALL in one statement), so the true match,
    which shares several keys, survives however crowded any single key is.
    """
    if not keys:
        return []
    per_key = [
        MatchKey.objects.filter(kind=kind, value=value)
        .exclude(individual_id__in=exclude)
        .order_by("individual_id")
        .values_list("individual_id", flat=True)[:PER_KEY]
        for kind, value in sorted(keys)
    ]
    rows = per_key[0].union(*per_key[1:], all=True) if len(per_key) > 1 else per_key[0]
    counts: dict[int, int] = {}
    for individual_id in rows:
        counts[individual_id] = counts.get(individual_id, 0) + 1
    return sorted(counts, key=lambda pk: (-counts[pk], pk))[:MAX_CANDIDATES]


def not_a_match_with(individual_id: int) -> set[int]:
    pairs = NotAMatch.objects.filter(Q(left_id=individual_id) | Q(right_id=individual_id)).values_list(
        "left_id", "right_id"
    )
    return {right if left == individual_id else left for left, right in pairs}


@dataclass
class MatchResult:
    """The rules' verdict on an incoming record: where it goes, and which pairs a steward should see."""

    best: tuple[Individual, Decision] | None = None
    suspects: list[tuple[int, Decision]] = field(default_factory=list)
    compared: int = 0


def match_profile(
    profile: MatchProfile, *, rules: list[RuleSpec] | None = None, exclude: set[int] = frozenset()
) -> MatchResult:
    """Compare a profile with the golden records its blocking keys find."""
    rules = load_rules() if rules is None else rules
    ids = candidate_ids(blocking_keys(profile), exclude=set(exclude))
    result = MatchResult(compared=len(ids))
    if not ids:
        return result
    candidates = Individual.objects.filter(pk__in=ids, merged_into__isnull=True, erased_at__isnull=True).in_bulk()
    xrefs: dict[int, list[SourceValues]] = {pk: [] for pk in candidates}
    for xref in CrossReference.objects.filter(individual_id__in=candidates, status=CrossReferenceStatus.VALID):
        parsed = _parsed(xref)
        if parsed is not None:
            changed = xref.source_modified_at or xref.last_seen_at
            xrefs[xref.individual_id].append(
                SourceValues(xref.system, xref.external_id, xref.pk, changed, parsed, xref.updated_at)
            )
    decisions = [(pk, decide(rules, profile, golden_profile(ind, xrefs[pk]))) for pk, ind in candidates.items()]
    ranked = [item for item in rank(decisions) if item[1].outcome != OUTCOME_NONE]
    if ranked and ranked[0][1].outcome == OUTCOME_AUTO:
        pk, decision = ranked[0]
        result.best = (Individual.objects.select_for_update().get(pk=pk), decision)
        ranked = ranked[1:]
    result.suspects = ranked[:MAX_SUSPECTS]
    return result


def queue_suspect(a: Individual, b_id: int, decision: Decision, *, actor: str) -> MatchCandidate | None:
    """Queue a suspect pair for review, unless a steward said not-a-match or it is already queued."""
    _require_atomic()
    left, right = sorted((a.pk, b_id))
    if left == right or NotAMatch.objects.filter(left_id=left, right_id=right).exists():
        return None
    if MatchCandidate.objects.filter(left_id=left, right_id=right, status=CandidateStatus.OPEN).exists():
        return None
    candidate = MatchCandidate.objects.create(
        left_id=left,
        right_id=right,
        rule=decision.rule[:120],
        score=decision.score,
        comparison=decision.explanation(),
        actor=actor[:120],
    )
    record_history(
        individual=a,
        master_id=a.master_id,
        action=HistoryAction.SUSPECT,
        obj=candidate,
        actor=actor,
        after={"candidate": b_id, "rule": decision.rule, "score": round(decision.score, 3)},
    )
    return candidate


# ---------------------------------------------------------------------------
# Survivorship
# ---------------------------------------------------------------------------
@dataclass
class Recomputed:
    individual: Individual
    changed_fields: list[str]
    added_contact_points: int
    removed_contact_points: int


def recompute_golden_record(
    individual: Individual,
    *,
    actor: str,
    actor_user: Any = None,
    incoming: SourceValues | None = None,
    history_action: str | None = HistoryAction.UPDATE,
) -> Recomputed:
    """Set the golden values, lineage, contact points and match keys from the source records."""
    _require_atomic()
    sources = source_values(individual, incoming=incoming)
    golden = compute(sources, load_strategies(), individual.pins or {})
    before = {name: getattr(individual, name) for name in SURVIVING_FIELDS}
    changed = [name for name in SURVIVING_FIELDS if golden.values[name] != before[name]]
    for name in changed:
        setattr(individual, name, golden.values[name])
    if incoming is not None and incoming.source.do_not_market_since and individual.do_not_market_since is None:
        individual.do_not_market_since = incoming.source.do_not_market_since
        individual.consent_source = incoming.system[:40]
        changed.append("do_not_market_since")
    lineage = dict(golden.lineage)
    if individual.pk is None or changed or lineage != individual.lineage:
        individual.lineage = lineage
        individual.save()
    added, removed = _sync_contact_points(individual, sources)
    refresh_match_keys(individual, golden_profile(individual, sources))
    if history_action and changed:
        record_history(
            individual=individual,
            master_id=individual.master_id,
            action=HistoryAction.CONSENT if changed == ["do_not_market_since"] else history_action,
            obj=individual,
            actor=actor,
            actor_user=actor_user,
            before={k: before.get(k) for k in changed if k in before},
            after={k: getattr(individual, k) for k in changed},
        )
    return Recomputed(individual, changed, added, removed)


def _sync_contact_points(individual: Individual, sources: list[SourceValues]) -> tuple[int, int]:
    """Contact points are kept all: one row per (kind, normalised value) any valid source holds."""
    wanted = contact_points(sources)
    existing = {(cp.kind, cp.value_key): cp for cp in individual.contact_points.all()}
    stale = [cp.pk for key, cp in existing.items() if key not in wanted]
    if stale:
        ContactPoint.objects.filter(pk__in=stale).delete()
    has_primary = {kind for (kind, _), cp in existing.items() if cp.is_primary and cp.pk not in stale}
    today = timezone.now().date()
    new_rows = []
    for (kind, value_key), (values, source) in wanted.items():
        if (kind, value_key) in existing:
            continue
        new_rows.append(
            ContactPoint(
                individual=individual,
                kind=kind,
                value_key=value_key,
                is_primary=kind not in has_primary,
                active_from_date=today,
                source_system=source.system[:40],
                **values,
            )
        )
        has_primary.add(kind)
    if new_rows:
        ContactPoint.objects.bulk_create(new_rows)
    if stale:
        # A removed primary hands the flag to the oldest remaining point of its kind.
        for kind in {ContactPointKind.EMAIL, ContactPointKind.PHONE, ContactPointKind.ADDRESS} - has_primary:
            first = individual.contact_points.filter(kind=kind).order_by("id").first()
            if first is not None:
                ContactPoint.objects.filter(pk=first.pk).update(is_primary=True)
    return len(new_rows), len(stale)


# ---------------------------------------------------------------------------
# Merge, unmerge, not-a-match
# ---------------------------------------------------------------------------
def _lock_pair(a: Individual, b: Individual) -> tuple[Individual, Individual]:
    with connection.cursor() as cursor:
        for key in sorted({f"master:{a.master_id}", f"master:{b.master_id}"}):
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])
    locked = {i.pk: i for i in Individual.objects.select_for_update().filter(pk__in=[a.pk, b.pk]).order_by("pk")}
    return locked[a.pk], locked[b.pk]


def _snapshot(individual: Individual) -> dict[str, Any]:
    return {name: getattr(individual, name) for name in SURVIVING_FIELDS} | {"master_id": individual.master_id}


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
    a, b = _lock_pair(a, b)
    if a.pk == b.pk:
        raise ResolutionError("a golden record cannot be merged with itself")
    for individual in (a, b):
        if not is_active(individual):
            raise ResolutionError(f"{individual.master_id} is merged or erased and cannot be merged again")
    survivor, retired = sorted((a, b), key=lambda i: (i.created_at, i.pk))
    before = {"survivor": _snapshot(survivor), "retired": _snapshot(retired)}
    now = timezone.now()
    moved = list(CrossReference.objects.filter(individual=retired).values_list("system", "external_id"))
    CrossReference.objects.filter(individual=retired).update(individual=survivor, updated_at=now)
    for name, pin in (retired.pins or {}).items():
        survivor.pins.setdefault(name, pin)
    if retired.do_not_market_since and (
        survivor.do_not_market_since is None or retired.do_not_market_since < survivor.do_not_market_since
    ):
        survivor.do_not_market_since = retired.do_not_market_since
        survivor.consent_source = retired.consent_source
    survivor.save()
    # Older redirects follow, so every retired ID resolves in one hop.
    Individual.objects.filter(merged_into=retired).update(merged_into=survivor)
    retired.merged_into = survivor
    retired.merged_at = now
    retired.save(update_fields=["merged_into", "merged_at", "updated_at"])
    retired.contact_points.all().delete()
    MatchKey.objects.filter(individual=retired).delete()
    _carry_pair_memory(retired, survivor, actor=actor, candidate=candidate)
    recompute_golden_record(survivor, actor=actor, actor_user=actor_user, history_action=None)
    change = {
        "survivingId": survivor.master_id,
        "retiredIds": [retired.master_id],
        "rule": rule,
        "movedCrossReferences": [{"system": s, "externalId": e} for s, e in moved],
    }
    for individual in (survivor, retired):
        record_history(
            individual=individual,
            master_id=individual.master_id,
            action=HistoryAction.MERGE,
            obj=survivor,
            actor=actor,
            actor_user=actor_user,
            before=before,
            after={"survivor": _snapshot(survivor), "retired_master_id": retired.master_id, "rule": rule},
        )
    publish_change(survivor, change_type=ChangeType.MERGED, actor=actor, change=change)
    from customers.signals import golden_records_merged

    golden_records_merged.send(sender=Individual, survivor=survivor, retired=retired, actor=actor)
    return survivor


def _carry_pair_memory(
    retired: Individual, survivor: Individual, *, actor: str, candidate: MatchCandidate | None
) -> None:
    """Not-a-match pairs of the retired record now hold for the survivor; its open candidates close."""
    now = timezone.now()
    for other in not_a_match_with(retired.pk) - {survivor.pk}:
        left, right = sorted((survivor.pk, other))
        NotAMatch.objects.get_or_create(left_id=left, right_id=right, defaults={"actor": actor[:120]})
    NotAMatch.objects.filter(Q(left=retired) | Q(right=retired)).delete()
    if candidate is not None:
        MatchCandidate.objects.filter(pk=candidate.pk).update(
            status=CandidateStatus.MERGED, decided_at=now, decided_by=actor[:120]
        )
    MatchCandidate.objects.filter(
        Q(left=retired) | Q(right=retired) | Q(left=survivor, right=retired), status=CandidateStatus.OPEN
    ).update(status=CandidateStatus.CLOSED, decided_at=now, decided_by=actor[:120])


@transaction.atomic
def unmerge_cross_reference(xref: CrossReference, *, actor: str, actor_user: Any = None) -> Individual:
    """Split one source record off into a golden record of its own, with a new master ID."""
    xref = CrossReference.objects.select_for_update().get(pk=xref.pk)
    original = Individual.objects.get(pk=xref.individual_id)
    original, _ = _lock_pair(original, original)
    if not is_active(original):
        raise ResolutionError("the cross reference's golden record is merged or erased")
    if CrossReference.objects.filter(individual=original).count() < 2:
        raise ResolutionError("the golden record has only this source record: there is nothing to split")
    before = _snapshot(original)
    split = Individual.objects.create()
    xref.individual = split
    xref.match_rule = "unmerged"
    xref.match_detail = {"unmergedFrom": original.master_id, "by": actor}
    xref.save()
    recompute_golden_record(original, actor=actor, actor_user=actor_user, history_action=None)
    recompute_golden_record(split, actor=actor, actor_user=actor_user, history_action=None)
    if original.do_not_market_since and original.consent_source == xref.system:
        split.do_not_market_since, split.consent_source = original.do_not_market_since, original.consent_source
        split.save(update_fields=["do_not_market_since", "consent_source", "updated_at"])
    # The split was a steward's decision: the rules must not merge the two back on their own.
    left, right = sorted((original.pk, split.pk))
    NotAMatch.objects.get_or_create(left_id=left, right_id=right, defaults={"actor": actor[:120], "reason": "unmerged"})
    change = {
        "originalId": original.master_id,
        "splitId": split.master_id,
        "crossReference": {"system": xref.system, "externalId": xref.external_id},
    }
    for individual, after in ((original, _snapshot(original)), (split, _snapshot(split))):
        record_history(
            individual=individual,
            master_id=individual.master_id,
            action=HistoryAction.UNMERGE,
            obj=xref,
            actor=actor,
            actor_user=actor_user,
            before=before,
            after=after | {"system": xref.system, "external_id": xref.external_id},
        )
        publish_change(individual, change_type=ChangeType.UNMERGED, actor=actor, change=change)
    from customers.signals import cross_reference_unmerged

    cross_reference_unmerged.send(sender=Individual, cross_reference=xref, original=original, split=split, actor=actor)
    return split


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
# Pins and steward edits
# ---------------------------------------------------------------------------
@transaction.atomic
def pin_value(individual: Individual, attribute: str, value: Any, *, actor: str, actor_user: Any = None) -> Individual:
    """Pin a golden value: it wins over every source until unpinned."""
    if attribute not in SURVIVING_FIELDS:
        raise ResolutionError(f"{attribute} cannot be pinned; pinnable: {', '.join(SURVIVING_FIELDS)}")
    individual = Individual.objects.select_for_update().get(pk=individual.pk)
    if not is_active(individual):
        raise ResolutionError("merged or erased golden records cannot be changed")
    if attribute == "birth_date" and isinstance(value, str):
        value = dt.date.fromisoformat(value) if value else None
    before = getattr(individual, attribute)
    individual.pins = dict(individual.pins or {}) | {
        attribute: {"value": _jsonable(value), "by": actor, "at": timezone.now().isoformat()}
    }
    individual.save(update_fields=["pins", "updated_at"])
    recompute_golden_record(individual, actor=actor, actor_user=actor_user, history_action=None)
    record_history(
        individual=individual,
        master_id=individual.master_id,
        action=HistoryAction.PIN,
        obj=individual,
        actor=actor,
        actor_user=actor_user,
        before={attribute: before},
        after={attribute: value},
    )
    publish_change(
        individual, change_type=ChangeType.UPDATED, actor=actor, change={"pinned": attribute, "source": "STEWARD"}
    )
    return individual


@transaction.atomic
def unpin_value(individual: Individual, attribute: str, *, actor: str, actor_user: Any = None) -> Individual:
    individual = Individual.objects.select_for_update().get(pk=individual.pk)
    if attribute not in (individual.pins or {}):
        return individual
    before = getattr(individual, attribute)
    individual.pins = {k: v for k, v in individual.pins.items() if k != attribute}
    individual.save(update_fields=["pins", "updated_at"])
    recompute_golden_record(individual, actor=actor, actor_user=actor_user, history_action=None)
    record_history(
        individual=individual,
        master_id=individual.master_id,
        action=HistoryAction.UNPIN,
        obj=individual,
        actor=actor,
        actor_user=actor_user,
        before={attribute: before},
        after={attribute: getattr(individual, attribute)},
    )
    publish_change(
        individual, change_type=ChangeType.UPDATED, actor=actor, change={"unpinned": attribute, "source": "STEWARD"}
    )
    return individual


_CIM_NAMES = {
    "salutation": "salutation",
    "first_name": "firstName",
    "middle_name": "middleName",
    "last_name": "lastName",
    "name_suffix": "nameSuffix",
    "birth_date": "birthDate",
    "gender": "gender",
}


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
    individual = Individual.objects.select_for_update().get(pk=individual.pk)
    if not is_active(individual):
        raise ResolutionError("merged or erased golden records cannot be changed")
    now = timezone.now()
    xref = CrossReference.objects.filter(system=STEWARD_SYSTEM, external_id=individual.master_id).first()
    payload = dict(xref.source_payload) if xref else {}
    for name, value in values.items():
        if name not in _CIM_NAMES:
            raise ResolutionError(f"{name} is not an editable attribute")
        payload[_CIM_NAMES[name]] = _jsonable(value) if value not in ("", None) else None
    points = [p for p in payload.get("contactPoints", []) if isinstance(p, dict)]
    if emails is not None:
        points = [p for p in points if p.get("contactPointType") != ContactPointKind.EMAIL]
        points += [{"contactPointType": ContactPointKind.EMAIL, "emailAddress": e} for e in emails]
    if phones is not None:
        points = [p for p in points if p.get("contactPointType") != ContactPointKind.PHONE]
        points += [{"contactPointType": ContactPointKind.PHONE, "telephoneNumber": p} for p in phones]
    payload["contactPoints"] = points
    try:
        parse_individual(payload)
    except CimValidationError as exc:
        raise ResolutionError(str(exc)) from None
    if xref is None:
        xref = CrossReference(
            individual=individual,
            system=STEWARD_SYSTEM,
            external_id=individual.master_id,
            first_seen_at=now,
            match_rule="steward",
        )
    xref.source_payload = payload
    xref.last_seen_at = now
    xref.source_modified_at = now
    xref.save()
    recomputed = recompute_golden_record(individual, actor=actor, actor_user=actor_user)
    publish_change(
        individual,
        change_type=ChangeType.UPDATED,
        actor=actor,
        change={"changedFields": recomputed.changed_fields, "source": STEWARD_SYSTEM},
    )
    return recomputed


__all__ = [
    "MAX_CANDIDATES",
    "OUTCOME_AUTO",
    "OUTCOME_SUSPECT",
    "MatchResult",
    "Recomputed",
    "ResolutionError",
    "candidate_ids",
    "clear_not_a_match",
    "golden_profile",
    "is_active",
    "load_rules",
    "lock_keys",
    "mark_not_a_match",
    "match_profile",
    "merge_individuals",
    "pin_value",
    "queue_suspect",
    "recompute_golden_record",
    "refresh_match_keys",
    "resolve_master_id",
    "skip_candidate",
    "source_values",
    "steward_edit",
    "unmerge_cross_reference",
    "unpin_value",
]
