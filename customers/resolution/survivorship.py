"""Survivorship: the golden record's values computed from its source records, per attribute.

Every cross reference keeps the latest payload its system sent; the golden value of
each attribute is chosen among those sources by the attribute's rule (source
priority, most recent, most frequent), a steward's pin overriding all of them.
Contact points are kept all (as Data Cloud keeps every email and phone). The
result carries the lineage of each value: system, record, when, and why.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from customers.choices import STEWARD_SYSTEM, ContactPointKind, SurvivorshipStrategy
from customers.models import SurvivorshipRule

SURVIVING_FIELDS = ("salutation", "first_name", "middle_name", "last_name", "name_suffix", "birth_date", "gender")

# Used when an attribute has no SurvivorshipRule row (a migration seeds one per attribute).
DEFAULT_STRATEGY = SurvivorshipStrategy.MOST_RECENT


@dataclass(frozen=True)
class SourceValues:
    """One source record's contribution: its parsed payload and when its system changed it."""

    system: str
    external_id: str
    cross_reference_id: int | None
    changed_at: dt.datetime
    source: Any  # customers.cim.SourceIndividual
    # The cross reference row's version (its updated_at), for caches keyed by row and version.
    changed_key: Any = None


@dataclass(frozen=True)
class Strategy:
    strategy: str
    priority: tuple[str, ...] = ()


@dataclass
class GoldenValues:
    values: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else value


def _rank(priority: tuple[str, ...], system: str) -> int:
    # The steward's own source outranks every system not named, so edits stick by default.
    if system in priority:
        return priority.index(system)
    return -1 if system == STEWARD_SYSTEM else len(priority)


def _name(source: SourceValues) -> tuple[str, str]:
    return source.system, source.external_id


def choose(strategy: Strategy, offers: list[tuple[Any, SourceValues]]) -> tuple[Any, SourceValues, str]:
    """The surviving (value, source) among non-empty offers, and a readable reason."""
    # The last key (the record's own name) settles exact ties the same way whatever order the
    # records arrived in: one person's records applied side by side end alike.
    by_priority = sorted(
        offers,
        key=lambda o: (_rank(strategy.priority, o[1].system), -o[1].changed_at.timestamp(), _name(o[1])),
    )
    if strategy.strategy == SurvivorshipStrategy.SOURCE_PRIORITY:
        value, source = by_priority[0]
        return value, source, f"source priority ({source.system})"
    if strategy.strategy == SurvivorshipStrategy.MOST_FREQUENT:
        counts = Counter(value for value, _ in offers)
        top = max(counts.values())
        # Ties go to the most trusted, then most recent, source offering one of the top values.
        for value, source in by_priority:
            if counts[value] == top:
                return value, source, f"most frequent ({top} of {len(offers)} sources)"
    newest = sorted(
        offers, key=lambda o: (-o[1].changed_at.timestamp(), _rank(strategy.priority, o[1].system), _name(o[1]))
    )
    value, source = newest[0]
    return value, source, "most recent"


def compute(sources: list[SourceValues], strategies: dict[str, Strategy], pins: dict[str, Any]) -> GoldenValues:
    """The golden values and their lineage; an attribute no source offers stays empty."""
    result = GoldenValues()
    for name in SURVIVING_FIELDS:
        if name in pins:
            pin = pins[name]
            value = pin.get("value")
            if name == "birth_date" and isinstance(value, str):
                value = dt.date.fromisoformat(value) if value else None
            result.values[name] = value if value is not None or name == "birth_date" else ""
            result.lineage[name] = {"rule": "pinned", "by": pin.get("by"), "at": pin.get("at")}
            continue
        offers = [(getattr(s.source, name), s) for s in sources if getattr(s.source, name) not in ("", None)]
        if not offers:
            result.values[name] = None if name == "birth_date" else ""
            continue
        value, source, reason = choose(strategies.get(name, Strategy(DEFAULT_STRATEGY)), offers)
        result.values[name] = value
        result.lineage[name] = {
            "system": source.system,
            "externalId": source.external_id,
            "crossReferenceId": source.cross_reference_id,
            "at": _iso(source.changed_at),
            "rule": reason,
        }
    return result


def contact_points(sources: list[SourceValues]) -> dict[tuple[str, str], tuple[dict[str, Any], SourceValues]]:
    """Every source's contact points, one per (kind, normalised value); the newest source supplies it."""
    result: dict[tuple[str, str], tuple[dict[str, Any], SourceValues]] = {}
    for source in sorted(sources, key=lambda s: (s.changed_at, _name(s))):
        for email in source.source.emails:
            result[(ContactPointKind.EMAIL, email.value_key)] = ({"email_address": email.email_address}, source)
        for phone in source.source.phones:
            result[(ContactPointKind.PHONE, phone.value_key)] = ({"telephone_number": phone.telephone_number}, source)
        for address in source.source.addresses:
            result[(ContactPointKind.ADDRESS, address.value_key)] = (
                {
                    "address_line1": address.address_line1,
                    "city_name": address.city_name,
                    "postal_code_text": address.postal_code_text,
                    "state_province_name": address.state_province_name,
                    "country_name": address.country_name,
                },
                source,
            )
    return result


def load_strategies() -> dict[str, Strategy]:
    """Each attribute's survivorship rule as the stewards set it (admin → Survivorship rules)."""
    return {r.attribute: Strategy(r.strategy, tuple(r.priority_list)) for r in SurvivorshipRule.objects.all()}
