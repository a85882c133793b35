"""Fellegi-Sunter match weights: per-attribute agreement levels, their m and u, and a pair's weight.

Each attribute of a pair falls into one comparison level (``LEVELS``: the first that holds,
strongest agreement first; ``missing`` when a side has no value). A level has an ``m``
probability (how often true matches land on it) and a ``u`` probability (how often
non-matches do). The match weight of a pair is the prior log-odds ``log2(λ / (1 - λ))``
plus ``log2(m / u)`` of every attribute's level; a missing attribute adds nothing. The
per-attribute parts are kept, so a steward reads *why* a weight is what it is.

The levels are read off the same lazily computed ``AttributeComparison`` the rules use, so
scoring a candidate costs one comparison per attribute and a dictionary look-up per level.
The model's parameters come from ``manage.py train_matcher`` (``customers.training``) and
are stored, versioned, in ``customers.models.MatcherModel``.

``decide_with_model`` is the decision when a model is active: an auto-merge rule still
merges (override), a guard rule blocks a score-based auto-merge (the pair goes to review),
a weight at or above the auto threshold merges, and the band from the review threshold up
goes to review, as do pairs a suspect rule holds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from customers.choices import MatcherStatus
from customers.models import MatcherModel
from customers.normalize import jaro_winkler
from customers.resolution.blocking import ATTRIBUTES, MatchProfile
from customers.resolution.rules import (
    OUTCOME_AUTO,
    OUTCOME_GUARD,
    OUTCOME_NONE,
    OUTCOME_SUSPECT,
    AttributeComparison,
    Comparisons,
    Decision,
    RuleSpec,
)

logger = logging.getLogger(__name__)
MISSING = "missing"
DIFFERENT = "different"
# Comparison levels per attribute, strongest agreement first; the last one is always ``different``.
LEVELS: dict[str, tuple[str, ...]] = {
    "first_name": ("normalized", "nickname", "fuzzy_92", "fuzzy_85", "phonetic", DIFFERENT),
    "last_name": ("normalized", "fuzzy_92", "fuzzy_85", "phonetic", DIFFERENT),
    "name_suffix": ("normalized", DIFFERENT),
    "birth_date": ("exact", "near", DIFFERENT),
    "email": ("normalized", "provider", "fuzzy_88", DIFFERENT),
    "phone": ("normalized", "last_7", DIFFERENT),
    # Same postcode with another street is its own level: the two are not independent (someone who
    # moved has a new postcode too), and "same postcode, other street" is how namesakes look.
    "postal_code": ("normalized", "other_street", DIFFERENT),
    "address": ("normalized", "fuzzy_90", DIFFERENT),
    "gender": ("normalized", DIFFERENT),
}
# Plain-words labels for the admin and the review queue.
LEVEL_LABELS = {
    "normalized": "same",
    "exact": "same",
    "nickname": "nickname",
    "fuzzy_92": "similar (≥ 0.92)",
    "fuzzy_90": "similar (≥ 0.90)",
    "fuzzy_88": "similar (≥ 0.88)",
    "fuzzy_85": "similar (≥ 0.85)",
    "phonetic": "sounds alike",
    "provider": "same mailbox",
    "near": "near (day/month swapped, same month, or one year off)",
    "last_7": "same last 7 digits",
    "other_street": "same, but another street",
    DIFFERENT: "different",
    MISSING: "missing",
}
SCORE_RULE = "Match weight"
# Names whose agreement is weighed by how common the shared name is (term frequency, as Splink's
# tf adjustments): two "Smith"s agreeing says less than two "Okonkwo"s.
TF_ATTRIBUTES = ("first_name", "last_name")
# Probabilities are kept away from 0 and 1 so that every level has a finite weight.
_FLOOR = 1e-6


def _near_dates(left: Iterable[str], right: Iterable[str]) -> bool:
    """Two ISO dates a typist could confuse: day and month swapped, same year and month, or one year off."""
    for a in left:
        for b in right:
            if len(a) < 10 or len(b) < 10:
                continue
            ya, ma, da = a[:4], a[5:7], a[8:10]
            yb, mb, db = b[:4], b[5:7], b[8:10]
            if ya == yb and (ma == mb or (ma == db and da == mb)):
                return True
            if ma == mb and da == db and ya.isdigit() and yb.isdigit() and abs(int(ya) - int(yb)) == 1:
                return True
    return False


def _last_digits(values: Iterable[str], count: int = 7) -> set[str]:
    result = set()
    for value in values:
        digits = "".join(ch for ch in value if ch.isdigit())
        if len(digits) >= count:
            result.add(digits[-count:])
    return result


def _local_similarity(left: Iterable[str], right: Iterable[str]) -> float:
    lefts = {e.lower().rpartition("@")[0] for e in left} - {""}
    rights = {e.lower().rpartition("@")[0] for e in right} - {""}
    return max((jaro_winkler(a, b) for a in lefts for b in rights), default=0.0)


def level_of(name: str, c: AttributeComparison) -> str:
    """The comparison level of one attribute (``missing`` when a side has no value)."""
    if c.blank:
        return MISSING
    if c.normalized or c.exact:
        return "exact" if name == "birth_date" else "normalized"
    sim = c.similarity
    if name == "first_name":
        if c.nickname:
            return "nickname"
        if sim >= 0.92:
            return "fuzzy_92"
        if sim >= 0.85:
            return "fuzzy_85"
        return "phonetic" if c.phonetic else DIFFERENT
    if name == "last_name":
        if sim >= 0.92:
            return "fuzzy_92"
        if sim >= 0.85:
            return "fuzzy_85"
        return "phonetic" if c.phonetic else DIFFERENT
    if name == "email":
        if c.provider:
            return "provider"
        # The mailbox names alone: a shared domain ("@example.com") makes any two addresses look alike.
        return "fuzzy_88" if sim >= 0.88 and _local_similarity(c.incoming, c.candidate) >= 0.88 else DIFFERENT
    if name == "address":
        return "fuzzy_90" if sim >= 0.90 else DIFFERENT
    if name == "birth_date":
        return "near" if _near_dates(c.incoming, c.candidate) else DIFFERENT
    if name == "phone":
        return "last_7" if _last_digits(c.incoming) & _last_digits(c.candidate) else DIFFERENT
    return DIFFERENT


def comparison_from_explanation(data: Mapping[str, Any]) -> AttributeComparison:
    """An attribute comparison as stored in a decision's explanation (enough to tell its level again)."""
    verdict = data.get("verdict", "blank")
    agrees = {verdict: True} if verdict in ("normalized", "provider", "nickname", "phonetic") else {}
    if verdict == "exact":
        agrees = {"exact": True, "normalized": True}
    return AttributeComparison(
        blank=verdict == "blank",
        incoming=list(data.get("incoming") or []),
        candidate=list(data.get("candidate") or []),
        similarity=float(data.get("similarity") or 0.0),
        **agrees,
    )


def levels_of(comparisons: Mapping[str, AttributeComparison]) -> tuple[str, ...]:
    """The level of every attribute (``ATTRIBUTES`` order), with the postcode read together with the street."""
    levels = [level_of(name, comparisons[name]) for name in ATTRIBUTES]
    levels[_POSTAL] = _postal_level(levels[_POSTAL], levels[_ADDRESS])
    return tuple(levels)


def _postal_level(postal: str, address: str) -> str:
    """The postcode's level read with the street's: the same postcode on another street is its own level."""
    return "other_street" if postal == "normalized" and address == DIFFERENT else postal


_POSTAL, _ADDRESS = ATTRIBUTES.index("postal_code"), ATTRIBUTES.index("address")
# The order ``MatchModel.cannot_reach`` compares attributes in: the cheap comparisons that weigh
# most first (set look-ups), the names (nicknames, Soundex, Jaro-Winkler) last.
_BOUND_ORDER = (
    ("birth_date",),
    ("email",),
    ("phone",),
    ("gender",),
    ("postal_code", "address"),
    ("name_suffix",),
    ("first_name",),
    ("last_name",),
)


def _log2_ratio(m: float, u: float) -> float:
    return math.log2(max(m, _FLOOR) / max(u, _FLOOR))


@dataclass(frozen=True)
class MatchModel:
    """m and u per attribute level, the prior share of matches among blocked pairs, and the thresholds."""

    m: dict[str, dict[str, float]]
    u: dict[str, dict[str, float]]
    prior: float
    auto_threshold: float
    review_threshold: float
    version: int | None = None
    # Share of golden records holding a name (only the common ones: a rarer name keeps the level's weight).
    frequencies: dict[str, dict[str, float]] = field(default_factory=dict)
    weights: dict[str, dict[str, float]] = field(init=False, repr=False, compare=False)
    prior_weight: float = field(init=False, repr=False, compare=False)
    # The most each attribute can add to a weight (a term-frequency adjustment only ever lowers a part).
    best_parts: dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The per-level weights are what scoring reads: computed once per model, not per pair.
        weights = {
            name: {level: _log2_ratio(self.m[name][level], self.u[name][level]) for level in levels}
            for name, levels in LEVELS.items()
        }
        for levels in weights.values():
            levels[MISSING] = 0.0
        prior = min(max(self.prior, _FLOOR), 1 - _FLOOR)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "prior_weight", math.log2(prior / (1 - prior)))
        object.__setattr__(self, "best_parts", {name: max(levels.values()) for name, levels in weights.items()})

    def cannot_reach(self, limit: float, comparisons: Comparisons) -> bool:
        """Whether the pair's weight is below ``limit`` whatever its attributes not compared yet turn out to be.

        Attributes are compared cheapest first, each one replacing its best possible part in the
        bound by its real level's part, until the bound falls below ``limit`` (True) or every
        attribute is compared and it has not (False). The postcode and the street are compared
        together, as their levels are read together.
        """
        bound = self.prior_weight + sum(self.best_parts.values())
        if bound < limit:
            return True
        for names in _BOUND_ORDER:
            for name in names:
                level = level_of(name, comparisons[name])
                if name == "postal_code":
                    level = _postal_level(level, level_of("address", comparisons["address"]))
                bound += self.weights[name][level] - self.best_parts[name]
            if bound < limit:
                return True
        return False

    def score(self, comparisons: Mapping[str, AttributeComparison]) -> tuple[float, dict[str, tuple[str, float]]]:
        """The match weight of a pair and each attribute's (level, part of the weight)."""
        total = self.prior_weight
        parts: dict[str, tuple[str, float]] = {}
        for name, level in zip(ATTRIBUTES, levels_of(comparisons), strict=True):
            part = self.weights[name][level]
            if level == "normalized" and name in self.frequencies and isinstance(comparisons, Comparisons):
                part = self.tf_weight(
                    name, comparisons.incoming.keys(name) & comparisons.candidate.keys(name), default=part
                )
            parts[name] = (level, part)
            total += part
        return total, parts

    def tf_weight(self, name: str, shared: Iterable[str], *, default: float) -> float:
        """An exact name agreement weighed by the rarest shared name: log2(m / f) when f beats the average u."""
        table = self.frequencies.get(name) or {}
        common = [table[value] for value in shared if value in table]
        if not common or len(common) < len(set(shared)):
            return default  # a rare name (not in the table) is shared: the level's weight stands
        frequency = min(common)
        if frequency <= self.u[name]["normalized"]:
            return default
        return min(default, _log2_ratio(self.m[name]["normalized"], frequency))

    def probability(self, weight: float) -> float:
        """The match probability a weight stands for (2^w / (1 + 2^w))."""
        if weight > 60:
            return 1.0
        odds = 2.0**weight
        return odds / (1 + odds)

    def to_json(self) -> dict[str, Any]:
        return {"m": self.m, "u": self.u, "prior": self.prior, "frequencies": self.frequencies}

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, auto_threshold: float, review_threshold: float, version: int | None = None
    ) -> MatchModel:
        """A model from its stored parameters; a level the data lacks gets m = u (weight 0)."""
        m: dict[str, dict[str, float]] = {}
        u: dict[str, dict[str, float]] = {}
        for name, levels in LEVELS.items():
            stored_m, stored_u = data.get("m", {}).get(name, {}), data.get("u", {}).get(name, {})
            m[name] = {level: float(stored_m.get(level, stored_u.get(level, 0.5))) for level in levels}
            u[name] = {level: float(stored_u.get(level, m[name][level])) for level in levels}
        frequencies = {
            name: {str(k): float(v) for k, v in (data.get("frequencies") or {}).get(name, {}).items()}
            for name in TF_ATTRIBUTES
            if (data.get("frequencies") or {}).get(name)
        }
        return cls(
            m=m,
            u=u,
            frequencies=frequencies,
            prior=float(data.get("prior", 0.01)),
            auto_threshold=auto_threshold,
            review_threshold=review_threshold,
            version=version,
        )

    def table(self) -> list[dict[str, Any]]:
        """Every level with its m, u and weight, for the admin page."""
        rows = []
        for name, levels in LEVELS.items():
            for level in levels:
                rows.append(
                    {
                        "attribute": name,
                        "level": level,
                        "label": LEVEL_LABELS.get(level, level),
                        "m": self.m[name][level],
                        "u": self.u[name][level],
                        "weight": round(self.weights[name][level], 2),
                    }
                )
            rows.append(
                {"attribute": name, "level": MISSING, "label": LEVEL_LABELS[MISSING], "m": None, "u": None, "weight": 0}
            )
        return rows


def decide_with_model(
    rules: Iterable[RuleSpec],
    model: MatchModel,
    incoming: MatchProfile,
    candidate: MatchProfile,
    *,
    comparisons: Comparisons | None = None,
    settle_early: bool = False,
) -> Decision:
    """Rules as overrides and guards, the match weight for the rest (see the module's docstring).

    With ``settle_early``, a pair that no auto-merge or suspect rule holds and whose weight
    cannot reach the review threshold, whatever its attributes not compared yet, is a no-match
    without them: the same outcome, explained only on what was compared, with no weight. A
    lookup that drops its no-matches asks for this; a steward's view or a dry run does not.
    """
    comparisons = comparisons if comparisons is not None else Comparisons(incoming, candidate)
    rules = list(rules)
    if settle_early and _settles_as_no_match(rules, model, comparisons):
        return Decision(OUTCOME_NONE, "", None, 0.0, comparisons.in_order(complete=False), model_version=model.version)
    weight, parts = model.score(comparisons)
    explained = comparisons.in_order(complete=True)

    def made(outcome: str, rule: RuleSpec | None, name: str = "", guard: str = "") -> Decision:
        return Decision(
            outcome,
            rule.name if rule else name,
            rule.rule_id if rule else None,
            rule.score(explained) if rule else min(1.0, model.probability(weight)),
            explained,
            model_version=model.version,
            weight=weight,
            parts=parts,
            guard=guard,
        )

    for rule in rules:
        if rule.outcome == OUTCOME_AUTO and rule.holds(comparisons):
            return made(OUTCOME_AUTO, rule)
    guard = next((r for r in rules if r.outcome == OUTCOME_GUARD and r.holds(comparisons)), None)
    if weight >= model.auto_threshold:
        if guard is None:
            return made(OUTCOME_AUTO, None, SCORE_RULE)
        return made(OUTCOME_SUSPECT, guard, guard=guard.name)
    for rule in rules:
        if rule.outcome == OUTCOME_SUSPECT and rule.holds(comparisons):
            return made(OUTCOME_SUSPECT, rule, guard=guard.name if guard else "")
    if weight >= model.review_threshold:
        return made(OUTCOME_SUSPECT, None, SCORE_RULE, guard=guard.name if guard else "")
    return made(OUTCOME_NONE, None, "", guard=guard.name if guard else "")


def _settles_as_no_match(rules: list[RuleSpec], model: MatchModel, comparisons: Comparisons) -> bool:
    # Below both thresholds: a weight under the review threshold is no auto-merge either, even
    # with thresholds set the wrong way round by hand.
    if not model.cannot_reach(min(model.auto_threshold, model.review_threshold), comparisons):
        return False
    return not any(r.outcome in (OUTCOME_AUTO, OUTCOME_SUSPECT) and r.holds(comparisons) for r in rules)


def model_of(row: MatcherModel) -> MatchModel:
    return MatchModel.from_json(
        row.parameters,
        auto_threshold=row.auto_threshold,
        review_threshold=row.review_threshold,
        version=row.version,
    )


def load_active_model() -> MatchModel | None:
    """The active matcher model, or None (then matching is the rules alone, as before models existed)."""
    row = MatcherModel.objects.filter(status=MatcherStatus.ACTIVE).first()
    if row is None:
        return None
    try:
        return model_of(row)
    except (AttributeError, TypeError, ValueError):
        # Parameters edited by hand into something unreadable must not stop every match: the rules
        # alone decide until the model is fixed or another one activated.
        logger.error("matcher model v%s has unreadable parameters; matching by the rules alone", row.version)
        return None
