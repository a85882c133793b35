"""Dry run of a match-rule change: what it would do to the golden records that exist today.

Pairs of separate golden records that share a blocking key are decided twice, with
the rules in force and with the proposed ones; the report counts how outcomes would
move (no match -> suspect, suspect -> auto-merge...) and shows examples. Nothing is
written. The scan is bounded (the most recently changed records first) so a steward
gets an answer in seconds on a large hub.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from customers.models import Individual
from customers.resolution.blocking import MatchProfile, blocking_keys
from customers.resolution.rules import Decision, RuleSpec, decide, load_rules, rule_spec
from customers.resolution.store import Golden, UnitOfWork
from customers.resolution.weights import MatchModel, decide_with_model, load_active_model

Decider = Callable[[MatchProfile, MatchProfile], Decision]

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


def _decider(rules: list[RuleSpec], model: MatchModel | None) -> Decider:
    if model is None:
        return lambda incoming, candidate: decide(rules, incoming, candidate)
    return lambda incoming, candidate: decide_with_model(rules, model, incoming, candidate)


def run_dry_run(proposed: list[RuleSpec], *, sample: int = DEFAULT_SAMPLE, examples: int = 25) -> DryRunReport:
    """Decide each candidate pair with today's rules and the proposed ones; report the differences.

    The active matcher model (if any) decides with both, so only the rule change shows.
    """
    model = load_active_model()
    return _compare(_decider(load_rules(), model), _decider(proposed, model), sample=sample, examples=examples)


def run_model_dry_run(proposed: MatchModel | None, *, sample: int = DEFAULT_SAMPLE, examples: int = 25) -> DryRunReport:
    """Decide each candidate pair as matching does today and with ``proposed`` active (None: no model)."""
    rules = load_rules()
    return _compare(_decider(rules, load_active_model()), _decider(rules, proposed), sample=sample, examples=examples)


def _compare(current: Decider, proposed: Decider, *, sample: int, examples: int) -> DryRunReport:
    report = DryRunReport()
    ids = list(
        Individual.objects.filter(merged_into__isnull=True, erased_at__isnull=True)
        .order_by("-updated_at", "-id")
        .values_list("pk", flat=True)[:sample]
    )
    work = UnitOfWork()
    work.load_goldens(ids)
    records = [work.golden(pk) for pk in ids if pk in work.goldens]
    keys = {pk: blocking_keys(work.profile_of(golden)) for pk, golden in ((g.pk, g) for g in records)}
    work.load_keys(key for ks in keys.values() for key in ks)
    seen: set[tuple[int, int]] = set()
    for golden in records:
        report.records_scanned += 1
        for other_id in work.candidate_ids(keys[golden.pk], exclude={golden.pk}):
            other = work.goldens.get(other_id)
            pair = (min(golden.pk, other_id), max(golden.pk, other_id))
            if pair in seen or other is None or not other.active:
                continue
            seen.add(pair)
            if other_id in work.not_a_match_with(golden.pk):
                continue  # a steward's word stands whatever the rules say
            left, right = work.golden(pair[0]), work.golden(pair[1])
            report.pairs_compared += 1
            before = current(work.profile_of(right), work.profile_of(left))
            after = proposed(work.profile_of(right), work.profile_of(left))
            if (before.outcome, before.rule) == (after.outcome, after.rule):
                report.unchanged += 1
                continue
            report.transitions[(_label(before), _label(after))] += 1
            if len(report.examples) < examples:
                report.examples.append(_example(left, right, before, after))
    return report


def _label(decision: Decision) -> str:
    return f"{decision.outcome}: {decision.rule}" if decision.rule else decision.outcome


def _name(golden: Golden) -> str:
    return " ".join(golden.values[n] for n in ("first_name", "middle_name", "last_name") if golden.values[n])


def _example(left: Golden, right: Golden, before: Decision, after: Decision) -> dict[str, Any]:
    return {
        "left": left.master_id,
        "left_id": left.pk,
        "left_name": _name(left),
        "right": right.master_id,
        "right_id": right.pk,
        "right_name": _name(right),
        "before": _label(before),
        "after": _label(after),
        "score": round(after.score, 3),
        "weight_before": None if before.weight is None else round(before.weight, 1),
        "weight_after": None if after.weight is None else round(after.weight, 1),
    }


__all__ = ["DryRunReport", "proposed_rules", "rule_spec", "run_dry_run", "run_model_dry_run"]
