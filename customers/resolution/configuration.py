"""The matching configuration in force: match rules, the active matcher model, survivorship rules.

Every unit of work needs all three, and parsing them (criteria, model parameters) costs more
than the lookup it serves, so a process keeps the last configuration it read and, per unit of
work, asks the database only whether it still holds: one small statement that fingerprints the
rows as they are now. The rules' rows go in whole (their text); the active model by its id,
thresholds and ``xmin`` (the transaction that last wrote its row: its parameters, tens of
kilobytes, cost more to hash than the whole lookup it serves). Any change a steward makes in the
admin, and a hand edit in SQL as well, changes the fingerprint, so the next unit of work in every
process reads the new configuration; nothing waits for a timeout. (Only a second edit of one
model's parameters inside the transaction that wrote them already would go unseen there; nothing
edits parameters in place, a new model is a new row.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from django.db import connection

from customers.choices import MatcherStatus
from customers.models import MatcherModel, MatchRule, SurvivorshipRule
from customers.resolution.rules import RuleSpec, load_rules
from customers.resolution.survivorship import Strategy, load_strategies
from customers.resolution.weights import MatchModel, load_active_model


class Configuration(NamedTuple):
    rules: list[RuleSpec]
    model: MatchModel | None
    strategies: dict[str, Strategy]


_FINGERPRINT_SQL = (
    "SELECT md5("
    f"coalesce((SELECT string_agg(r::text, '|' ORDER BY r.id) FROM {MatchRule._meta.db_table} r), '') || '#' || "
    f"coalesce((SELECT string_agg(s::text, '|' ORDER BY s.id) FROM {SurvivorshipRule._meta.db_table} s), '') || '#' || "
    "coalesce((SELECT string_agg(concat_ws(':', m.id, m.xmin, m.auto_threshold, m.review_threshold), "
    f"'|') FROM {MatcherModel._meta.db_table} m WHERE m.status = %s), ''))"
)

# Per database (a process may talk to more than one): (fingerprint, configuration) as last read.
_last: dict[tuple[Any, ...], tuple[str, Configuration]] = {}


def fingerprint() -> str:
    """What the three tables hold now, as one hash (one statement)."""
    with connection.cursor() as cursor:
        cursor.execute(_FINGERPRINT_SQL, [MatcherStatus.ACTIVE])
        return cursor.fetchone()[0]


def in_force() -> Configuration:
    """The configuration as the database holds it now: the one read before while unchanged, else read again."""
    database = tuple(connection.settings_dict.get(name) for name in ("HOST", "PORT", "NAME"))
    current = fingerprint()
    known = _last.get(database)
    if known is not None and known[0] == current:
        return known[1]
    # Read after the fingerprint: if a change lands in between, the next call sees a fingerprint
    # other than the one stored here and reads again (one extra read, never a stale one kept).
    configuration = Configuration(load_rules(), load_active_model(), load_strategies())
    _last[database] = (current, configuration)
    return configuration
