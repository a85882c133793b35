"""Dry run of a match-rule change: what it would do to the golden records that exist today.

Pairs of separate golden records that share a blocking key are decided twice, with
the rules in force and with the proposed ones; the report counts how outcomes would
move (no match -> suspect, suspect -> auto-merge...) and shows examples. Nothing is
written. The scan is bounded (the most recently changed records first) so a steward
gets an answer in seconds on a large hub.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from customers.matching import Decision, MatchProfile, RuleSpec, blocking_keys, decide
from customers.models import Individual, NotAMatch
from customers.resolution import candidate_ids, golden_profile, load_rules, rule_spec

DEFAULT_SAMPLE = 2000


@dataclass
class DryRunReport:
    records_scanned: int = 0
    pairs_compared: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> int:
        return sum(self.transitions.values())

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"before": before, "after": after, "pairs": count}
            for (before, after), count in sorted(self.transitions.items(), key=lambda item: -item[1])
        ]


def proposed_rules(rule_id: int | None, proposed: RuleSpec | None) -> list[RuleSpec]:
    """The enabled rules with one of them replaced, added, or (``proposed`` None) left out."""
    current = [r for r in load_rules() if r.rule_id != rule_id]
    if proposed is not None:
        current.append(proposed)
    return current


def run_dry_run(proposed: list[RuleSpec], *, sample: int = DEFAULT_SAMPLE, examples: int = 25) -> DryRunReport:
    """Decide each candidate pair with today's rules and the proposed ones; report the differences."""
    current = load_rules()
    report = DryRunReport()
    records = list(
        Individual.objects.filter(merged_into__isnull=True, erased_at__isnull=True)
        .order_by("-updated_at", "-id")
        .prefetch_related("contact_points")[:sample]
    )
    profiles: dict[int, MatchProfile] = {}
    names: dict[int, Individual] = {}

    def profile_of(individual: Individual) -> MatchProfile:
        if individual.pk not in profiles:
            profiles[individual.pk] = golden_profile(individual)
            names[individual.pk] = individual
        return profiles[individual.pk]

    seen: set[tuple[int, int]] = set()
    for individual in records:
        report.records_scanned += 1
        profile = profile_of(individual)
        others = candidate_ids(blocking_keys(profile), exclude={individual.pk})
        missing = [pk for pk in others if pk not in profiles]
        for other in Individual.objects.filter(pk__in=missing, merged_into__isnull=True, erased_at__isnull=True):
            profile_of(other)
        for other_id in others:
            pair = (min(individual.pk, other_id), max(individual.pk, other_id))
            if pair in seen or other_id not in profiles:
                continue
            seen.add(pair)
            if NotAMatch.objects.filter(left_id=pair[0], right_id=pair[1]).exists():
                continue  # a steward's word stands whatever the rules say
            report.pairs_compared += 1
            before = decide(current, profiles[pair[1]], profiles[pair[0]])
            after = decide(proposed, profiles[pair[1]], profiles[pair[0]])
            if (before.outcome, before.rule) == (after.outcome, after.rule):
                report.unchanged += 1
                continue
            report.transitions[(_label(before), _label(after))] += 1
            if len(report.examples) < examples:
                report.examples.append(_example(names[pair[0]], names[pair[1]], before, after))
    return report


def _label(decision: Decision) -> str:
    return f"{decision.outcome}: {decision.rule}" if decision.rule else decision.outcome


def _example(left: Individual, right: Individual, before: Decision, after: Decision) -> dict[str, Any]:
    return {
        "left": left.master_id,
        "left_id": left.pk,
        "left_name": left.person_name,
        "right": right.master_id,
        "right_id": right.pk,
        "right_name": right.person_name,
        "before": _label(before),
        "after": _label(after),
        "score": round(after.score, 3),
    }


__all__ = ["DryRunReport", "proposed_rules", "rule_spec", "run_dry_run"]
