"""Training the matcher: u from random pairs, m by EM over blocked pairs, steward decisions as labels.

``manage.py train_matcher`` runs ``train`` and saves the result as a draft ``MatcherModel``;
nothing changes in matching until a steward activates it in the admin.

- **u** (how often non-matches agree at a level) is counted over random pairs of the hub's
  own golden records: random pairs are, all but never, different people.
- **m** (how often matches agree at a level) and the prior share of matches among blocked
  pairs are estimated by expectation-maximisation over *blocked* pairs: two records sharing
  a blocking key, as matching meets them. They are (1) a golden record's source records
  compared with each other, (2) golden records compared with the candidates their blocking
  keys find, and (3) any incoming-like profiles the caller passes (the benchmark's, whose
  golden records have one source each). u stays fixed, as in Splink's approach.
- **Labels**: stewards' decisions anchor the EM: a merged review pair counts as a match, a
  pair marked not-a-match (unmerges leave one too) as a non-match, with their posterior
  fixed instead of estimated.
- **Thresholds**: precision and recall of the auto-merge outcome (rules as overrides and
  guards, as matching applies them) at candidate thresholds, against the labelled pairs
  when there are enough, else against the rules' own auto-merge decisions on the blocked
  pairs as weak labels; the report says which. With enough steward decisions the auto
  threshold is the lowest that meets the target precision against them, and never below the
  weight at which the model's own match probability reaches that precision
  (``posterior_floor``); the review threshold the highest that keeps auto + review recall at
  its target. Weak labels choose nothing (every merge the weights add counts against them),
  so without enough decisions the thresholds are that floor and REVIEW_BAND bits below it.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Max

from customers.choices import CandidateStatus
from customers.models import MatchCandidate, MatcherModel, NotAMatch
from customers.resolution.blocking import ATTRIBUTES, MatchProfile, blocking_keys
from customers.resolution.rules import OUTCOME_AUTO, OUTCOME_GUARD, Comparisons, RuleSpec, load_rules
from customers.resolution.store import UnitOfWork
from customers.resolution.weights import (
    DIFFERENT,
    LEVELS,
    MISSING,
    TF_ATTRIBUTES,
    MatchModel,
    comparison_from_explanation,
    levels_of,
)

# Pseudo-counts that keep a level never seen from a zero probability (and an infinite weight).
U_SMOOTHING = 1.0
M_SMOOTHING = 0.1
MIN_LABELLED_MATCHES = 30
REVIEW_BAND = 4.0
# Names kept in the model's frequency table: the most common ones, each seen at least this often.
TF_KEEP = 2000
TF_MIN_COUNT = 3


@dataclass
class TrainingPair:
    """One compared pair: its levels, whether the rules auto-merge or guard it, and its label if any."""

    levels: tuple[str, ...]
    auto_rule: bool
    guarded: bool
    guard: str = ""  # the first guard rule that holds
    # Per name attribute agreeing exactly: the names shared (for the term-frequency weights).
    shared: dict[str, frozenset[str]] = field(default_factory=dict)
    label: int | None = None  # 1 match, 0 non-match (a steward's word or a caller's label)
    origin: str = ""


def _pair(
    comparisons: dict[str, Any], auto_rules: Sequence[RuleSpec], guards: Sequence[RuleSpec], **kwargs: Any
) -> TrainingPair:
    guard = next((r for r in guards if r.holds(comparisons)), None)
    shared = {}
    if isinstance(comparisons, Comparisons):
        for name in TF_ATTRIBUTES:
            if comparisons[name].normalized:
                shared[name] = frozenset(comparisons.incoming.keys(name) & comparisons.candidate.keys(name))
    return TrainingPair(
        shared=shared,
        levels=levels_of(comparisons),
        auto_rule=any(r.holds(comparisons) for r in auto_rules),
        guarded=guard is not None,
        guard=guard.name if guard is not None else "",
        **kwargs,
    )


def labelled_pair(incoming: MatchProfile, candidate: MatchProfile, label: int, *, origin: str) -> TrainingPair:
    """One pair with a label a caller has (a steward's review of a sample, say), as ``collect`` makes them."""
    rules = load_rules()
    auto_rules = [r for r in rules if r.outcome == OUTCOME_AUTO]
    guards = [r for r in rules if r.outcome == OUTCOME_GUARD]
    pair = _pair(Comparisons(incoming, candidate), auto_rules, guards, origin=origin)
    pair.label = label
    return pair


@dataclass
class TrainingData:
    random_pairs: list[tuple[str, ...]] = field(default_factory=list)
    blocked: list[TrainingPair] = field(default_factory=list)
    labelled: list[TrainingPair] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    frequencies: dict[str, dict[str, float]] = field(default_factory=dict)


def _random_ids(count: int, rng: random.Random) -> list[int]:
    """``count`` live golden records drawn by the seed: the same records for the same seed and table."""
    # Ordered by a hash of the id salted with a draw from the seeded generator, not by random():
    # PostgreSQL's random() would make every training on the same data a different sample.
    salt = f"{rng.getrandbits(64):016x}:"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM customers_individual WHERE merged_into_id IS NULL AND erased_at IS NULL "
            "ORDER BY md5(%s || id::text), id LIMIT %s",
            [salt, count],
        )
        return [row[0] for row in cursor.fetchall()]


def collect(
    *,
    random_records: int = 4000,
    random_offsets: int = 5,
    blocked_records: int = 3000,
    incoming: Iterable[tuple[MatchProfile, int | None]] = (),
    seed: int = 13,
) -> TrainingData:
    """Every pair training needs, as comparison levels (see the module's docstring)."""
    rng = random.Random(seed)
    rules = load_rules()
    auto_rules = [r for r in rules if r.outcome == OUTCOME_AUTO]
    guards = [r for r in rules if r.outcome == OUTCOME_GUARD]
    data = TrainingData()
    work = UnitOfWork(render_snapshots=False)

    # u: random pairs of golden records (each record with a few others, so pairs outnumber records).
    ids = _random_ids(random_records, rng)
    work.load_goldens(ids)
    profiles = {pk: work.profile_of(work.golden(pk)) for pk in ids if pk in work.goldens}
    ordered = list(profiles)
    for offset in range(1, random_offsets + 1) if len(ordered) > random_offsets else ():
        for i, pk in enumerate(ordered):
            other = ordered[(i + offset) % len(ordered)]
            comparisons = Comparisons(profiles[pk], profiles[other])
            data.random_pairs.append(levels_of(comparisons))
    data.counts["random pairs"] = len(data.random_pairs)
    # How common each name is among golden records (the common ones weigh less when shared).
    for name in TF_ATTRIBUTES:
        counts = Counter(value for profile in profiles.values() for value in profile.keys(name))
        data.frequencies[name] = {
            value: count / len(profiles) for value, count in counts.most_common(TF_KEEP) if count >= TF_MIN_COUNT
        }

    # Blocked pairs (1): the source records of one golden record, compared with each other.
    sample = _random_ids(blocked_records, rng)
    work.load_goldens(sample)
    for pk in sample:
        golden = work.goldens.get(pk)
        if golden is None or not golden.active:
            continue
        parsed = [p[1] for r in golden.sources if r.valid and (p := r.parsed()) is not None]
        for other in parsed[1:]:
            data.blocked.append(_pair(Comparisons(other, parsed[0]), auto_rules, guards, origin="sources"))
            data.counts["blocked pairs: source records of one golden record"] += 1

    # Blocked pairs (2): golden records and the candidates their blocking keys find.
    keys = {pk: blocking_keys(work.profile_of(work.golden(pk))) for pk in sample if pk in work.goldens}
    work.load_keys(key for ks in keys.values() for key in ks)
    seen: set[tuple[int, int]] = set()
    for pk, own in keys.items():
        for other_id in work.candidate_ids(own, exclude={pk}):
            pair = (min(pk, other_id), max(pk, other_id))
            other = work.goldens.get(other_id)
            if pair in seen or other is None or not other.active:
                continue
            seen.add(pair)
            comparisons = Comparisons(work.profile_of(work.golden(pk)), work.profile_of(other))
            data.blocked.append(_pair(comparisons, auto_rules, guards, origin="golden"))
            data.counts["blocked pairs: golden records sharing a blocking key"] += 1

    # Blocked pairs (3): incoming-like profiles the caller has, with their candidates (and labels).
    for profile, truth in incoming:
        for other_id in work.candidate_ids(blocking_keys(profile)):
            other = work.goldens.get(other_id)
            if other is None or not other.active:
                continue
            label = None if truth is None else int(other_id == truth)
            pair = _pair(Comparisons(profile, work.profile_of(other)), auto_rules, guards, origin="incoming")
            if label is None:
                data.blocked.append(pair)
                data.counts["blocked pairs: incoming records and their candidates"] += 1
            else:
                pair.label = label
                data.labelled.append(pair)
                data.counts["labelled pairs: given by the caller"] += 1

    # Labels: stewards' decisions on review pairs (their stored comparison), and not-a-match pairs.
    decided = MatchCandidate.objects.filter(status__in=[CandidateStatus.MERGED, CandidateStatus.NOT_A_MATCH])
    labelled_pairs: set[tuple[int, int]] = set()
    for left, right, status, comparison in decided.values_list("left_id", "right_id", "status", "comparison"):
        attributes = (comparison or {}).get("attributes") or {}
        comparisons = {name: comparison_from_explanation(attributes.get(name) or {}) for name in ATTRIBUTES}
        label = 1 if status == CandidateStatus.MERGED else 0
        data.labelled.append(_pair(comparisons, auto_rules, guards, label=label, origin="review decision"))
        labelled_pairs.add((left, right))
        data.counts["labelled pairs: " + ("merged" if label else "not a match") + " in review"] += 1
    others = [p for p in NotAMatch.objects.values_list("left_id", "right_id") if p not in labelled_pairs]
    work.load_goldens({pk for pair in others for pk in pair})
    for left, right in others:
        a, b = work.goldens.get(left), work.goldens.get(right)
        if a is None or b is None or not a.active or not b.active:
            continue
        comparisons = Comparisons(work.profile_of(b), work.profile_of(a))
        data.labelled.append(_pair(comparisons, auto_rules, guards, label=0, origin="not-a-match"))
        data.counts["labelled pairs: not-a-match (incl. unmerges)"] += 1
    return data


def estimate_u(random_pairs: Sequence[tuple[str, ...]]) -> dict[str, dict[str, float]]:
    """u per level: the share of random pairs at it, among those where the attribute is not missing."""
    u: dict[str, dict[str, float]] = {}
    for i, name in enumerate(ATTRIBUTES):
        counts = Counter(levels[i] for levels in random_pairs if levels[i] != MISSING)
        total = sum(counts.values()) + U_SMOOTHING * len(LEVELS[name])
        u[name] = {level: (counts[level] + U_SMOOTHING) / total for level in LEVELS[name]}
    return u


def initial_m() -> dict[str, dict[str, float]]:
    """Where EM starts: matches mostly agree fully, now and then partly, seldom not at all."""
    m: dict[str, dict[str, float]] = {}
    for name, levels in LEVELS.items():
        partial = [level for level in levels if level not in (levels[0], DIFFERENT)]
        m[name] = {levels[0]: 0.8, DIFFERENT: 0.05 if partial else 0.2}
        for level in partial:
            m[name][level] = 0.15 / len(partial)
    return m


@dataclass
class EMResult:
    m: dict[str, dict[str, float]]
    prior: float
    iterations: int
    converged: bool
    u_blocked: dict[str, dict[str, float]] = field(default_factory=dict)


def expectation_maximisation(
    pairs: Sequence[TrainingPair],
    u: dict[str, dict[str, float]],
    *,
    m: dict[str, dict[str, float]] | None = None,
    prior: float = 0.1,
    label_weight: float = 1.0,
    max_iterations: int = 100,
    tolerance: float = 1e-5,
) -> EMResult:
    """m, the prior and the non-matches' levels among blocked pairs, by EM; labelled pairs keep their label.

    Blocked pairs are not random pairs: the non-matches among them (household members, twins,
    namesakes) share an address or a surname far more often than random pairs do. With u held
    at its random-pair value, EM would take every blocked pair for a match (the prior runs to
    1), so the blocked non-matches' own u is estimated alongside, starting from the random one;
    the model keeps the random-pair u for its weights, as the issue asks, and the m EM found.
    Identical level patterns are folded together first, so an iteration costs one pass over
    the distinct patterns (a few thousand), not over the pairs.
    """
    m = {name: dict(levels) for name, levels in (m or initial_m()).items()}
    u_blocked = {name: dict(levels) for name, levels in u.items()}
    unlabelled = Counter(p.levels for p in pairs if p.label is None)
    anchored = Counter((p.levels, p.label) for p in pairs if p.label is not None)
    patterns = list(unlabelled.items())
    n_unlabelled = sum(unlabelled.values())
    converged = False
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        weighted: list[tuple[tuple[str, ...], float, float]] = []  # levels, match weight, non-match weight
        expected_matches = 0.0
        for levels, count in patterns:
            log_odds = math.log(prior / (1 - prior))
            for i, name in enumerate(ATTRIBUTES):
                level = levels[i]
                if level != MISSING:
                    log_odds += math.log(m[name][level] / u_blocked[name][level])
            posterior = 1 / (1 + math.exp(-log_odds)) if log_odds > -700 else 0.0
            expected_matches += posterior * count
            weighted.append((levels, posterior * count, (1 - posterior) * count))
        for (levels, label), count in anchored.items():
            weighted.append((levels, label * count * label_weight, (1 - label) * count * label_weight))
        new_m = _m_step(weighted, 1)
        new_u = _m_step(weighted, 2)
        new_prior = min(max(expected_matches / n_unlabelled, 1e-6), 1 - 1e-6) if n_unlabelled else prior
        change = max(
            max(abs(new_m[n][lv] - m[n][lv]), abs(new_u[n][lv] - u_blocked[n][lv]))
            for n, levels in LEVELS.items()
            for lv in levels
        )
        change = max(change, abs(new_prior - prior))
        m, u_blocked, prior = new_m, new_u, new_prior
        if change < tolerance:
            converged = True
            break
    return EMResult(m=m, prior=prior, iterations=iterations, converged=converged, u_blocked=u_blocked)


def _m_step(weighted: Sequence[tuple[tuple[str, ...], float, float]], index: int) -> dict[str, dict[str, float]]:
    sums = {name: Counter() for name in ATTRIBUTES}
    totals = dict.fromkeys(ATTRIBUTES, 0.0)
    for item in weighted:
        levels, weight = item[0], item[index]
        if weight <= 0:
            continue
        for i, name in enumerate(ATTRIBUTES):
            if levels[i] != MISSING:
                sums[name][levels[i]] += weight
                totals[name] += weight
    return {
        name: {lv: (sums[name][lv] + M_SMOOTHING) / (totals[name] + M_SMOOTHING * len(levels)) for lv in levels}
        for name, levels in LEVELS.items()
    }


def _weights(model: MatchModel, pairs: Sequence[TrainingPair]) -> list[float]:
    """Each pair's match weight as matching computes it (term-frequency weights included)."""
    result = []
    for p in pairs:
        total = model.prior_weight
        for i, name in enumerate(ATTRIBUTES):
            part = model.weights[name][p.levels[i]]
            if name in p.shared:
                part = model.tf_weight(name, p.shared[name], default=part)
            total += part
        result.append(total)
    return result


def evaluate(
    model: MatchModel, pairs: Sequence[TrainingPair], labels: Sequence[int], thresholds: Iterable[float]
) -> list[dict[str, Any]]:
    """Precision and recall of auto-merge (rules override, guards block) and of auto + review, per threshold."""
    weights = _weights(model, pairs)
    positives = sum(labels)
    rows = []
    for t in thresholds:
        auto = [p.auto_rule or (w >= t and not p.guarded) for p, w in zip(pairs, weights, strict=True)]
        flagged = [a or w >= t for a, w in zip(auto, weights, strict=True)]
        tp = sum(1 for a, y in zip(auto, labels, strict=True) if a and y)
        fp = sum(1 for a, y in zip(auto, labels, strict=True) if a and not y)
        found = sum(1 for f, y in zip(flagged, labels, strict=True) if f and y)
        rows.append(
            {
                "threshold": round(t, 2),
                "auto_merges": tp + fp,
                "false_auto_merges": fp,
                "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                "recall": round(tp / positives, 4) if positives else None,
                "recall_with_review": round(found / positives, 4) if positives else None,
            }
        )
    return rows


def posterior_floor(target_precision: float) -> float:
    """The lowest auto threshold (by halves) at which the model's own match probability reaches the target."""
    return math.ceil(2 * math.log2(target_precision / (1 - target_precision))) / 2


@dataclass
class Trained:
    model: MatchModel
    report: dict[str, Any]


def train(
    data: TrainingData,
    *,
    target_precision: float = 0.995,
    review_recall: float = 0.99,
    max_iterations: int = 100,
    label_weight: float = 1.0,
) -> Trained:
    """Estimate u, m and the prior, choose the thresholds and write the training report."""
    if not data.random_pairs:
        raise ValueError("no random pairs: the hub needs golden records to train on")
    u = estimate_u(data.random_pairs)
    em = expectation_maximisation(
        data.blocked + data.labelled, u, label_weight=label_weight, max_iterations=max_iterations
    )
    draft = MatchModel(
        m=em.m, u=u, prior=em.prior, auto_threshold=0.0, review_threshold=0.0, frequencies=data.frequencies
    )
    labelled_matches = sum(1 for p in data.labelled if p.label == 1)
    steward_labels = labelled_matches >= MIN_LABELLED_MATCHES and any(p.label == 0 for p in data.labelled)
    if steward_labels:
        pairs, labels = data.labelled, [p.label or 0 for p in data.labelled]
        against = f"labelled decisions ({len(pairs)} pairs, {labelled_matches} matches)"
    else:
        # Too few steward decisions: the table is measured against what the rules themselves would
        # auto-merge, for information only. Such labels cannot choose a threshold: every merge the
        # weights add counts against it, and a guarded pair never does.
        pairs = data.blocked
        labels = [int(p.auto_rule) for p in pairs]
        against = (
            f"weak labels: the rules' auto-merge decisions on {len(pairs)} blocked pairs "
            f"(only {labelled_matches} labelled matches; {MIN_LABELLED_MATCHES} needed)"
        )
    candidates = [t / 2 for t in range(-20, 81)]  # -10 to 40 by halves
    table = evaluate(draft, pairs, labels, candidates)
    # A match weight is the model's posterior log-odds, so below log2(p / (1 - p)) the model itself
    # gives the pair less than the target precision: the auto threshold never goes lower.
    floor = posterior_floor(target_precision)
    auto_threshold = next(
        (r["threshold"] for r in table if r["precision"] is not None and r["precision"] >= target_precision),
        candidates[-1],
    )
    # The auto threshold is the lowest meeting the precision, and every higher one must too.
    for row in table:
        if row["threshold"] >= auto_threshold and row["precision"] is not None and row["precision"] < target_precision:
            auto_threshold = row["threshold"] + 0.5
    # Labels that every threshold satisfies (guards holding every pair the rules would not merge,
    # say) choose nothing either: the lowest threshold tried would win.
    labels_undecided = not steward_labels or auto_threshold <= candidates[0]
    if steward_labels:
        auto_threshold = max(auto_threshold, floor)
        review_threshold = max(
            (
                r["threshold"]
                for r in table
                if r["recall_with_review"] is not None and r["recall_with_review"] >= review_recall
            ),
            default=candidates[0],
        )
        threshold_basis = "labelled decisions"
    else:
        auto_threshold, review_threshold = floor, floor - REVIEW_BAND
        threshold_basis = "the model's own match probability (too few steward decisions)"
    # A review band of at least REVIEW_BAND bits below the auto threshold (odds 16 times lower), so
    # pairs just short of it reach a steward even where the labels saw no match there.
    review_threshold = min(review_threshold, auto_threshold - REVIEW_BAND)
    model = MatchModel(
        m=em.m,
        u=u,
        prior=em.prior,
        auto_threshold=auto_threshold,
        review_threshold=review_threshold,
        frequencies=data.frequencies,
    )
    report = {
        "pairs": dict(data.counts),
        "em": {"iterations": em.iterations, "converged": em.converged, "prior": round(em.prior, 6)},
        "evaluated_against": against,
        "target_precision": target_precision,
        "review_recall": review_recall,
        "auto_threshold": auto_threshold,
        "auto_threshold_floor": floor,
        "labels_undecided": labels_undecided,
        "threshold_basis": threshold_basis,
        "review_threshold": review_threshold,
        "thresholds": table,
    }
    return Trained(model=model, report=report)


def save_draft(trained: Trained, *, actor: str, notes: str = "") -> MatcherModel:
    """The trained model as the next draft version (never active: a steward activates it in the admin)."""
    version = (MatcherModel.objects.aggregate(v=Max("version"))["v"] or 0) + 1
    return MatcherModel.objects.create(
        version=version,
        parameters=trained.model.to_json(),
        auto_threshold=trained.model.auto_threshold,
        review_threshold=trained.model.review_threshold,
        training_report=trained.report,
        notes=notes,
        created_by=actor[:120],
    )


def format_report(report: dict[str, Any]) -> str:
    lines = ["Pairs:"]
    lines += [f"  {name}: {count}" for name, count in report["pairs"].items()]
    em = report["em"]
    lines.append(f"EM: {em['iterations']} iterations, converged {em['converged']}, prior {em['prior']}")
    lines.append(f"Precision and recall against {report['evaluated_against']}:")
    lines.append(f"  {'threshold':>9} {'auto':>6} {'false':>6} {'precision':>9} {'recall':>7} {'+review':>8}")
    for row in report["thresholds"]:
        lines.append(
            f"  {row['threshold']:>9} {row['auto_merges']:>6} {row['false_auto_merges']:>6} "
            f"{_fmt(row['precision']):>9} {_fmt(row['recall']):>7} {_fmt(row['recall_with_review']):>8}"
        )
    lines.append(
        f"Chosen: auto-merge at weight >= {report['auto_threshold']} (target precision {report['target_precision']}), "
        f"review from {report['review_threshold']} (target recall with review {report['review_recall']})"
    )
    if report.get("labels_undecided"):
        lines.append(
            f"Warning: the labels chose no threshold; the auto threshold is the model's own floor "
            f"({report.get('auto_threshold_floor')}: its match probability at the target precision). "
            "Check the dry run, or train again after more steward decisions, before activating it."
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


__all__ = [
    "TrainingData",
    "TrainingPair",
    "collect",
    "estimate_u",
    "expectation_maximisation",
    "labelled_pair",
    "train",
]
