"""What the matching benchmarks set up the same way: the default match rules and the active matcher model.

Needs Django set up by the script that imports it.
"""

from __future__ import annotations

from typing import Any

from customers.choices import MatcherStatus
from customers.defaults import DEFAULT_MATCH_RULES
from customers.models import MatcherModel, MatchRule
from customers.stewardship import activate_matcher_model, retire_matcher_model


def sync_rules() -> None:
    """Make the MatchRule rows what customers/defaults.py says (the migration only creates missing ones)."""
    names = set()
    for rule in DEFAULT_MATCH_RULES:
        names.add(rule["name"])
        MatchRule.objects.update_or_create(
            name=rule["name"],
            defaults={k: rule[k] for k in ("outcome", "priority", "description", "criteria")}
            | {"enabled": True, "updated_by": "bench"},
        )
    MatchRule.objects.exclude(name__in=names).update(enabled=False)


def rules_in_force() -> list[dict[str, Any]]:
    return [
        {"name": r.name, "outcome": r.outcome, "priority": r.priority, "criteria": r.criteria}
        for r in MatchRule.objects.filter(enabled=True).order_by("outcome", "priority", "id")
    ]


def set_active_model(version: int | None) -> None:
    """Make this version the active matcher model, as a steward's activation does (None: the rules alone)."""
    if version is None:
        for row in MatcherModel.objects.filter(status=MatcherStatus.ACTIVE):
            retire_matcher_model(row)
    else:
        activate_matcher_model(MatcherModel.objects.get(version=version), actor="bench")
