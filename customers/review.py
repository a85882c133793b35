"""Side-by-side comparison of two golden records, with the rules' verdict and a merge preview."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from customers.models import Individual, MatcherModel
from customers.resolution.blocking import ATTRIBUTES
from customers.resolution.store import UnitOfWork
from customers.resolution.survivorship import SURVIVING_FIELDS, compute
from customers.resolution.survivorship import contact_points as union_of_contact_points
from customers.resolution.weights import LEVEL_LABELS

# What a rule's score is, in a steward's words (RuleSpec.score: the mean over the rule's criteria).
SCORE_MEANING = (
    "agreement from 0 to 1: the mean, over the rule's criteria, of how alike the two values are "
    "(1 = equal once normalised, or one side blank; a name or an email in between is its Jaro-Winkler similarity)"
)


@dataclass
class Comparison:
    left: Individual
    right: Individual
    survivor: Individual
    rows: list[dict[str, Any]]
    contact_rows: list[dict[str, Any]]
    decision: dict[str, Any]
    left_sources: list[Any]
    right_sources: list[Any]

    @property
    def sides(self) -> tuple[Individual, Individual]:
        return (self.left, self.right)

    @property
    def score_meaning(self) -> str:
        return SCORE_MEANING


def _show(value: Any) -> str:
    return "" if value in (None, "") else str(value)


def _readable(values: dict[str, str]) -> str:
    """A contact point as a steward reads it (the address parts joined), not its matching key."""
    return ", ".join(v for v in values.values() if v)


def compare_records(left: Individual, right: Individual) -> Comparison:
    """What differs, what the rules say, and what the merged record would hold (nothing is saved)."""
    work = UnitOfWork()
    work.load_goldens([left.pk, right.pk])
    golden_left, golden_right = work.golden(left.pk), work.golden(right.pk)
    left_sources, right_sources = golden_left.valid_sources(), golden_right.valid_sources()
    decision = work.decide(work.profile_of(golden_right), work.profile_of(golden_left), explain_all=True)
    survivor = min((left, right), key=lambda i: (i.created_at, i.pk))
    retired = right if survivor is left else left
    pins = dict(retired.pins or {}) | dict(survivor.pins or {})
    preview = compute(left_sources + right_sources, work.strategies, pins)
    rows = []
    for name in SURVIVING_FIELDS:
        a, b = _show(getattr(left, name)), _show(getattr(right, name))
        verdict = decision.comparisons.get(name)
        rows.append(
            {
                "attribute": name.replace("_", " "),
                "left": a,
                "right": b,
                "differs": bool(a and b and a != b),
                "verdict": verdict.verdict if verdict else "",
                "similarity": f"{verdict.similarity:.2f}" if verdict and not verdict.blank else "",
                "merged": _show(preview.values.get(name)),
                "merged_from": (preview.lineage.get(name) or {}).get("system", ""),
            }
        )
    left_points = union_of_contact_points(left_sources)
    right_points = union_of_contact_points(right_sources)
    shown = {key: _readable(values) for key, (values, _) in (left_points | right_points).items()}
    contact_rows = [
        {
            "kind": kind.replace("ContactPoint", ""),
            "value": shown[(kind, value)],
            "left": (kind, value) in left_points,
            "right": (kind, value) in right_points,
        }
        for kind, value in sorted(shown)
    ]
    return Comparison(
        left=left,
        right=right,
        survivor=survivor,
        rows=rows,
        contact_rows=contact_rows,
        decision=decision.explanation(),
        left_sources=left_sources,
        right_sources=right_sources,
    )


def decision_rows(explanation: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per compared attribute of a stored decision (``Decision.explanation()``), as the pair page shows it."""
    attributes = (explanation or {}).get("attributes")
    if not isinstance(attributes, dict):
        return []
    rows = []
    for name, compared in attributes.items():
        compared = compared if isinstance(compared, dict) else {}
        similarity = compared.get("similarity")
        rows.append(
            {
                "attribute": str(name).replace("_", " "),
                "incoming": ", ".join(str(v) for v in compared.get("incoming") or []),
                "candidate": ", ".join(str(v) for v in compared.get("candidate") or []),
                "verdict": str(compared.get("verdict", "")),
                # A blank side was not compared: its 0.0 would read as "nothing alike".
                "similarity": f"{similarity:.2f}"
                if isinstance(similarity, int | float) and compared.get("verdict") != "blank"
                else "",
            }
        )
    return rows


def weight_parts(explanation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The match weight of a stored decision, its model version and each attribute's part, or None without a model.

    Read from the stored decision alone (no query), so a list of decisions can show them. The
    parts come in the comparison's attribute order (the stored JSON's key order is PostgreSQL's).
    """
    explanation = explanation if isinstance(explanation, dict) else {}
    weight, parts = explanation.get("weight"), explanation.get("parts")
    if not isinstance(weight, int | float) or not isinstance(parts, dict):
        return None
    order = {name: n for n, name in enumerate(ATTRIBUTES)}
    rows = []
    for name in sorted(parts, key=lambda n: (order.get(n, len(order)), str(n))):
        part = parts[name] if isinstance(parts[name], dict) else {}
        level = str(part.get("level", ""))
        rows.append(
            {
                "attribute": str(name).replace("_", " "),
                "level": LEVEL_LABELS.get(level, level),
                "weight": part.get("weight") if isinstance(part.get("weight"), int | float) else 0.0,
            }
        )
    version = explanation.get("modelVersion")
    return {
        "weight": weight,
        "model_version": version if isinstance(version, int) else None,
        "guard": str(explanation.get("guard") or ""),
        "rows": rows,
    }


def weight_summary(explanation: dict[str, Any] | None) -> dict[str, Any] | None:
    """``weight_parts`` with the prior as a part of its own, so the column adds up to the weight, and the
    thresholds of the version that decided, so the page can say whether a guard stopped a merge.
    """
    parts = weight_parts(explanation)
    if parts is None:
        return None
    version, weight = parts["model_version"], parts["weight"]
    model = MatcherModel.objects.filter(version=version).first() if version is not None else None
    auto = model.auto_threshold if model is not None else None
    return {
        **parts,
        "prior": weight - sum(row["weight"] for row in parts["rows"]),
        "model": model,
        "auto_threshold": auto,
        "review_threshold": model.review_threshold if model is not None else None,
        "guard_blocked": auto is not None and weight >= auto,
    }
