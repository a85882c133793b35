"""Match rules a steward can read: per-attribute comparisons, criteria that must all hold, an outcome.

A rule is a list of criteria that must all hold (as in Salesforce Data Cloud's match
rules and Reltio's match groups) and an outcome: ``auto_merge`` or ``suspect``. A
decision that matches shows the whole per-attribute comparison (every attribute by
every method), not only the criteria that fired. Multi-valued attributes (a golden
record has all its sources' values) are compared every value against every value and
the best agreement counts.

Deciding is lazy: an attribute is compared only when a criterion asks about it, so a
pair that no rule can hold (most candidates of a crowded blocking key) costs a few set
operations, and only a pair that matches is compared on everything for its explanation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from customers.models import MatchRule
from customers.nicknames import name_groups
from customers.normalize import jaro_winkler, provider_email, soundex
from customers.resolution.blocking import ATTRIBUTES, MatchProfile

METHODS = ("exact", "normalized", "provider", "fuzzy", "phonetic", "nickname")
OUTCOME_AUTO = "auto_merge"
OUTCOME_SUSPECT = "suspect"
# A guard blocks an auto-merge by match weight (the pair goes to review); it never merges or
# queues a pair by itself, and without an active matcher model it does nothing at all.
OUTCOME_GUARD = "guard"
OUTCOME_NONE = "no_match"
# Methods that make sense per attribute (a steward's rule naming another combination is refused).
METHODS_BY_ATTRIBUTE = {
    "first_name": ("exact", "normalized", "fuzzy", "phonetic", "nickname"),
    "last_name": ("exact", "normalized", "fuzzy", "phonetic"),
    "name_suffix": ("normalized",),
    "birth_date": ("exact",),
    "email": ("exact", "normalized", "provider", "fuzzy"),
    "phone": ("exact", "normalized"),
    "postal_code": ("exact", "normalized"),
    "address": ("normalized", "fuzzy"),
    "gender": ("normalized",),
}
# Attributes whose similarity is worth a Jaro-Winkler (a phone or a date is equal or not).
FUZZY_ATTRIBUTES = frozenset({"first_name", "last_name", "email", "address"})
# Cheap, selective attributes first: a rule's criteria are checked in this order (all must
# hold, so the order changes the cost of a verdict, never the verdict).
_CHEAP_FIRST = ("email", "phone", "birth_date", "postal_code", "gender", "name_suffix", "last_name", "first_name")
_CHECK_ORDER = {name: i for i, name in enumerate(_CHEAP_FIRST)}


class AttributeComparison:
    """How one attribute of two profiles compares, by every method.

    Made by ``compare_attribute``, each method's answer is worked out the first time it is
    read: most candidate pairs are settled by one or two methods of one or two attributes
    (another email, another phone), and the rest would be work no rule asks for. The answers
    are the ones an eager comparison gives, because a profile does not change once it is
    compared (a unit of work builds a new one when a golden record changes). Made with the
    answers given (a stored explanation read back), nothing is worked out.
    """

    __slots__ = (
        "name",
        "blank",
        "_left",
        "_right",
        "_exact",
        "_normalized",
        "_provider",
        "_phonetic",
        "_nickname",
        "_similarity",
        "_incoming",
        "_candidate",
    )

    def __init__(
        self,
        blank: bool,
        *,
        exact: bool = False,
        normalized: bool = False,
        provider: bool = False,
        phonetic: bool = False,
        nickname: bool = False,
        similarity: float = 0.0,  # best Jaro-Winkler over all value pairs (normalised)
        incoming: Iterable[str] = (),
        candidate: Iterable[str] = (),
    ) -> None:
        self.name = ""
        self.blank = blank  # one side (or both) has no value
        self._left: MatchProfile | None = None
        self._right: MatchProfile | None = None
        self._exact: bool | None = exact
        self._normalized: bool | None = normalized
        self._provider: bool | None = provider
        self._phonetic: bool | None = phonetic
        self._nickname: bool | None = nickname
        self._similarity: float | None = similarity
        self._incoming: list[str] | None = list(incoming)
        self._candidate: list[str] | None = list(candidate)

    def _keys(self) -> tuple[set[str], set[str]]:
        assert self._left is not None and self._right is not None
        return self._left.keys(self.name), self._right.keys(self.name)

    @property
    def exact(self) -> bool:
        """One value the same as sent (but for surrounding blanks) and read the same way (its key).

        The key matters where the value as sent does not say it all: an address is kept as its
        street line, and its key adds the postcode (or town) and the country, so one street line
        in two towns is not the same address (a nine-digit postcode is likewise read by its country).
        """
        if self._exact is None:
            assert self._left is not None and self._right is not None
            left = {(raw.strip(), key) for raw, key in self._left.values[self.name]}
            self._exact = not left.isdisjoint({(raw.strip(), key) for raw, key in self._right.values[self.name]})
        return self._exact

    @property
    def normalized(self) -> bool:
        if self._normalized is None:
            lkeys, rkeys = self._keys()
            self._normalized = not lkeys.isdisjoint(rkeys)
        return self._normalized

    @property
    def provider(self) -> bool:
        if self._provider is None:
            lkeys, rkeys = self._keys()
            self._provider = self.name == "email" and not {provider_email(e) for e in lkeys}.isdisjoint(
                {provider_email(e) for e in rkeys}
            )
        return self._provider

    @property
    def phonetic(self) -> bool:
        if self._phonetic is None:
            lkeys, rkeys = self._keys()
            self._phonetic = self.name in ("first_name", "last_name") and bool(
                ({soundex(v) for v in lkeys} & {soundex(v) for v in rkeys}) - {""}
            )
        return self._phonetic

    @property
    def nickname(self) -> bool:
        if self._nickname is None:
            lkeys, rkeys = self._keys()
            self._nickname = self.name == "first_name" and not set().union(*(name_groups(v) for v in lkeys)).isdisjoint(
                set().union(*(name_groups(v) for v in rkeys))
            )
        return self._nickname

    @property
    def similarity(self) -> float:
        if self._similarity is None:
            if self.normalized:
                self._similarity = 1.0
            elif self.name in FUZZY_ATTRIBUTES:
                lkeys, rkeys = self._keys()
                self._similarity = max(jaro_winkler(a, b) for a in lkeys for b in rkeys)
            else:
                self._similarity = 0.0
        return self._similarity

    def _shown(self, profile: MatchProfile | None) -> list[str]:
        """A side's values as sent (the first five, sorted), as a steward sees them."""
        assert profile is not None
        return sorted(profile.raws(self.name))[:5]

    @property
    def incoming(self) -> list[str]:
        if self._incoming is None:
            self._incoming = self._shown(self._left)
        return self._incoming

    @property
    def candidate(self) -> list[str]:
        if self._candidate is None:
            self._candidate = self._shown(self._right)
        return self._candidate

    @property
    def verdict(self) -> str:
        if self.blank:
            return "blank"
        for name in ("exact", "normalized", "provider", "nickname", "phonetic"):
            if getattr(self, name):
                return name
        return "different"

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "similarity": round(self.similarity, 3),
            "incoming": self.incoming,
            "candidate": self.candidate,
        }


def compare_attribute(name: str, left: MatchProfile, right: MatchProfile) -> AttributeComparison:
    """The comparison of ``name`` between two profiles, each method worked out when first read."""
    comparison = AttributeComparison.__new__(AttributeComparison)
    comparison.name = name
    comparison._left, comparison._right = left, right
    comparison._incoming = comparison._candidate = None
    comparison.blank = not left.keys(name) or not right.keys(name)
    if comparison.blank:
        comparison._exact = comparison._normalized = comparison._provider = False
        comparison._phonetic = comparison._nickname = False
        comparison._similarity = 0.0
    else:
        comparison._exact = comparison._normalized = comparison._provider = None
        comparison._phonetic = comparison._nickname = comparison._similarity = None
    return comparison


class Comparisons(dict[str, AttributeComparison]):
    """The attribute comparisons of one pair, each computed the first time a criterion asks for it."""

    def __init__(self, incoming: MatchProfile, candidate: MatchProfile) -> None:
        super().__init__()
        self.incoming, self.candidate = incoming, candidate

    def __missing__(self, name: str) -> AttributeComparison:
        comparison = compare_attribute(name, self.incoming, self.candidate)
        self[name] = comparison
        return comparison

    def in_order(self, *, complete: bool) -> dict[str, AttributeComparison]:
        """The comparisons in attribute order; with ``complete``, every attribute's."""
        return {name: self[name] for name in ATTRIBUTES if complete or name in self}


@dataclass(frozen=True)
class Criterion:
    attribute: str
    method: str
    threshold: float = 0.0
    blank_matches: bool = False
    # Inverted: holds when both sides have a value and they do NOT agree by this method (guards
    # say "the first names differ", "the birth dates differ").
    differs: bool = False

    def holds(self, comparison: AttributeComparison) -> bool:
        if self.differs:
            return not comparison.blank and not self._agrees(comparison)
        return self._agrees(comparison)

    def _agrees(self, comparison: AttributeComparison) -> bool:
        if comparison.blank:
            return self.blank_matches
        if self.method == "exact":
            return comparison.exact
        if self.method == "normalized":
            return comparison.normalized
        if self.method == "provider":
            return comparison.provider or comparison.normalized
        if self.method == "phonetic":
            return comparison.phonetic or comparison.normalized
        if self.method == "nickname":
            return comparison.nickname or comparison.normalized or comparison.similarity >= (self.threshold or 1.01)
        if self.method == "fuzzy":
            return comparison.normalized or comparison.similarity >= self.threshold
        return False

    def describe(self) -> str:
        text = f"{self.attribute} {self.method}"
        if self.method in ("fuzzy", "nickname") and self.threshold:
            text += f" >= {self.threshold:g}"
        if self.differs:
            return f"{self.attribute} differs (not {text.removeprefix(self.attribute + ' ')})"
        return text + (" (or blank)" if self.blank_matches else "")


@dataclass(frozen=True)
class RuleSpec:
    """A match rule as the matcher sees it (``customers.models.MatchRule`` rows become these)."""

    name: str
    outcome: str
    criteria: tuple[Criterion, ...]
    rule_id: int | None = None

    @cached_property
    def check_order(self) -> tuple[Criterion, ...]:
        return tuple(sorted(self.criteria, key=lambda c: _CHECK_ORDER.get(c.attribute, len(_CHECK_ORDER))))

    def holds(self, comparisons: dict[str, AttributeComparison]) -> bool:
        # Every criterion must hold, and at least one must really agree: blanks alone prove nothing.
        agreed = False
        for criterion in self.check_order:
            comparison = comparisons[criterion.attribute]
            if not criterion.holds(comparison):
                return False
            agreed = agreed or not comparison.blank
        return agreed

    def score(self, comparisons: dict[str, AttributeComparison]) -> float:
        parts = [1.0 if comparisons[c.attribute].blank else comparisons[c.attribute].similarity for c in self.criteria]
        return sum(parts) / len(parts) if parts else 0.0


def parse_criteria(data: Any) -> tuple[Criterion, ...]:
    """Criteria from their JSON form; ValueError naming the culprit when one is not valid."""
    if not isinstance(data, list) or not data:
        raise ValueError("criteria must be a non-empty list")
    result = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"criteria[{i}] must be an object")
        attribute, method = item.get("attribute"), item.get("method")
        if attribute not in METHODS_BY_ATTRIBUTE:
            raise ValueError(f"criteria[{i}].attribute must be one of {', '.join(METHODS_BY_ATTRIBUTE)}")
        if method not in METHODS_BY_ATTRIBUTE[attribute]:
            raise ValueError(
                f"criteria[{i}].method for {attribute} must be one of {', '.join(METHODS_BY_ATTRIBUTE[attribute])}"
            )
        threshold = item.get("threshold", 0.0)
        if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
            raise ValueError(f"criteria[{i}].threshold must be a number between 0 and 1")
        if method == "fuzzy" and not threshold:
            raise ValueError(f"criteria[{i}].threshold is required for a fuzzy comparison")
        unknown = set(item) - {"attribute", "method", "threshold", "blank_matches", "differs"}
        if unknown:
            raise ValueError(f"criteria[{i}] has unknown keys: {', '.join(sorted(unknown))}")
        if not isinstance(item.get("differs", False), bool):
            raise ValueError(f"criteria[{i}].differs must be true or false")
        result.append(
            Criterion(
                attribute,
                method,
                float(threshold),
                bool(item.get("blank_matches", False)),
                bool(item.get("differs", False)),
            )
        )
    return tuple(result)


def rule_spec(rule: MatchRule) -> RuleSpec:
    return RuleSpec(rule.name, rule.outcome, parse_criteria(rule.criteria), rule.pk)


def load_rules() -> list[RuleSpec]:
    """The enabled rules, in the order they are tried (auto-merge rules first when deciding)."""
    specs = []
    for rule in MatchRule.objects.filter(enabled=True).order_by("priority", "id"):
        try:
            specs.append(rule_spec(rule))
        except ValueError:
            continue  # the admin refuses invalid criteria; a hand-edited bad row is skipped, not fatal
    return specs


@dataclass
class Decision:
    """What the rules decided about one pair, with the reasons."""

    outcome: str
    rule: str
    rule_id: int | None
    score: float
    comparisons: dict[str, AttributeComparison]
    # Why the pair was decided when no rule compared it (a carried master ID, say).
    note: str = ""
    # With an active matcher model: its version, the pair's match weight and each attribute's
    # (level, part of the weight); the guard rule that blocked a score-based auto-merge, if any.
    model_version: int | None = None
    weight: float | None = None
    parts: dict[str, tuple[str, float]] | None = None
    guard: str = ""

    def explanation(self) -> dict[str, Any]:
        explained = {
            "outcome": self.outcome,
            "rule": self.rule,
            "ruleId": self.rule_id,
            "score": round(self.score, 3),
            "attributes": {name: c.as_dict() for name, c in self.comparisons.items()},
        }
        if self.note:
            explained["note"] = self.note
        if self.weight is not None:
            explained["modelVersion"] = self.model_version
            explained["weight"] = round(self.weight, 2)
            explained["parts"] = {
                name: {"level": level, "weight": round(part, 2)} for name, (level, part) in (self.parts or {}).items()
            }
            if self.guard:
                explained["guard"] = self.guard
        return explained


def decide(
    rules: Iterable[RuleSpec], incoming: MatchProfile, candidate: MatchProfile, *, explain_all: bool = False
) -> Decision:
    """The first auto-merge rule that holds wins; else the first suspect rule; else no match.

    A match is explained on every attribute; a no-match only on those the rules looked
    at, unless ``explain_all`` (a steward's side-by-side view wants them all).
    """
    comparisons = Comparisons(incoming, candidate)
    rules = list(rules)
    for outcome in (OUTCOME_AUTO, OUTCOME_SUSPECT):
        for rule in rules:
            if rule.outcome == outcome and rule.holds(comparisons):
                explained = comparisons.in_order(complete=True)
                return Decision(outcome, rule.name, rule.rule_id, rule.score(explained), explained)
    return Decision(OUTCOME_NONE, "", None, 0.0, comparisons.in_order(complete=explain_all))


def rank(decisions: Iterable[tuple[int, Decision]]) -> list[tuple[int, Decision]]:
    """Candidates best first: auto before suspect, higher match weight (with a model) or score, then the older."""
    order = {OUTCOME_AUTO: 0, OUTCOME_SUSPECT: 1, OUTCOME_NONE: 2}
    return sorted(
        decisions,
        key=lambda item: (
            order[item[1].outcome],
            -(item[1].weight if item[1].weight is not None else 0.0),
            -item[1].score,
            item[0],
        ),
    )
