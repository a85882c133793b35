"""The columns of Marketing Cloud's own exports and extracts, read as the hub's subscriber fields.

A backfill file may come straight out of Marketing Cloud. The column names it can carry:

- the **Subscribers** file of a Tracking Extract (Automation Studio's Data Extract activity):
  ``ClientID, SubscriberKey, EmailAddress, SubscriberID, Status, DateHeld, DateCreated,
  DateUnsubscribed`` (Marketing Cloud's Data Extract documentation, "Tracking Extract Output:
  Subscribers", wiki.memberlandingpages.com/Activities/Data_Extract_Activity/Extract_Types/
  Tracking_Extract/Tracking_Extract_Output/Subscribers);
- the **_Subscribers data view**, queried into a data extension and exported: ``SubscriberID,
  DateUndeliverable, DateJoined, DateUnsubscribed, Domain, EmailAddress, BounceCount,
  SubscriberKey, SubscriberType, Status, Locale``; "Dates and times are stored in Central Standard
  Time. Daylight Savings Time isn't observed." (Salesforce Help, "Data View: Subscribers",
  help.salesforce.com/s/articleView?id=mktg.mc_as_data_view_subscribers.htm);
- Email Studio's list and subscriber exports, whose columns are the fields' display names
  (``Email Address``, ``Subscriber Key``, ``Date Joined``...): names are compared without case,
  spaces, underscores or hyphens, so those read as the names above **(inferred** from the display
  names in the UI; no export file of that kind was at hand to check).

``DateCreated`` and ``DateJoined`` are when the subscriber was created (``CreatedDate``);
``DateUnsubscribed`` and ``DateHeld`` date an Unsubscribed or Held status, so they are the
do-not-market date (and the row's change date when it has no ``ModifiedDate``). Columns the hub
has no use for (``ClientID``, ``Domain``, ``BounceCount``...) and any other column are ignored and
named in the command's output; ``--map OLD=NEW`` reads any header as one of the hub's columns (or,
``OLD=``, ignores it). Two columns giving the same field are refused, naming both.

Dates without an offset are read in the tenant's time: Marketing Cloud system time, UTC-6 all year
(``schema.MC_SYSTEM_TIME``), unless the import names another zone (an export made in a user's time
zone preference). ``6/23/2024 12:00:00 AM`` and ISO 8601 both are.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from integrations.marketing_cloud.mapping import IN_ARGUMENTS
from integrations.marketing_cloud.schema import MC_SYSTEM_TIME, parse_mc_datetime

__all__ = [
    "DATE_COLUMNS",
    "HELD_DATE",
    "UNSUBSCRIBED_DATE",
    "ColumnError",
    "ColumnPlan",
    "describe_zone",
    "in_tenant_time",
    "parse_column_map",
    "plan_columns",
    "tenant_zone",
]

REQUIRED = ("SubscriberKey", "EmailAddress")
# Not journey in-arguments: the dates an export gives a status.
UNSUBSCRIBED_DATE, HELD_DATE = "UnsubscribedDate", "HeldDate"
TARGETS = (*IN_ARGUMENTS, UNSUBSCRIBED_DATE, HELD_DATE)
DATE_COLUMNS = frozenset({"CreatedDate", "ModifiedDate", UNSUBSCRIBED_DATE, HELD_DATE})

_SEPARATORS = re.compile(r"[\s_\-]+")


def _folded(name: str) -> str:
    return _SEPARATORS.sub("", name).casefold()


# Export and extract names (folded) of the hub's columns; every target also stands for itself.
_ALIASES = {_folded(t): t for t in TARGETS} | {
    "subscriberid": "SubscriberId",
    "datecreated": "CreatedDate",
    "datejoined": "CreatedDate",
    "dateadded": "CreatedDate",
    "dateunsubscribed": UNSUBSCRIBED_DATE,
    "unsubscribeddate": UNSUBSCRIBED_DATE,
    "dateheld": HELD_DATE,
}
_KNOWN_UNUSED = frozenset(
    _folded(n) for n in ("ClientID", "DateUndeliverable", "Domain", "BounceCount", "SubscriberType", "Locale")
)


class ColumnError(ValueError):
    """A header the import cannot read as asked; the message names the column."""


@dataclass
class ColumnPlan:
    """What each column of the file is: a target name, or None (ignored)."""

    targets: list[str | None]
    names: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mapped: dict[str, str] = field(default_factory=dict)

    def described(self) -> dict[str, str]:
        """File column -> what the import reads it as ("" when ignored), in file order."""
        return {name: target or "" for name, target in zip(self.names, self.targets, strict=True) if name}


def parse_column_map(pairs: Iterable[str]) -> dict[str, str]:
    """``["OLD=NEW", ...]`` (from ``--map``) as a dict; NEW empty means "ignore OLD"."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        old, new = old.strip(), new.strip()
        if not sep or not old:
            raise ColumnError(f"--map {pair!r}: write it as OLD=NEW (the file's column, then the hub's)")
        if old.casefold() in {o.casefold() for o in mapping}:
            raise ColumnError(f"--map names the column {old!r} twice")
        if new:
            target = next((t for t in TARGETS if t.casefold() == new.casefold()), None)
            if target is None:
                raise ColumnError(
                    f"--map {old}={new}: {new!r} is no column the import knows (it knows {', '.join(TARGETS)})"
                )
            new = target
        mapping[old] = new
    return mapping


def plan_columns(header: list[str], mapping: dict[str, str] | None = None) -> ColumnPlan:
    """Read the header row: each column's target, refusing what cannot be read; errors name the column."""
    mapping = mapping or {}
    names = [name.strip() for name in header]
    by_folded = {name.casefold(): i for i, name in enumerate(names)}
    for old in mapping:
        if old.casefold() not in by_folded:
            raise ColumnError(f"--map {old}=...: the file has no column {old!r} (its columns: {', '.join(names)})")
    plan = ColumnPlan(targets=[], names=names)
    given: dict[str, str] = {}  # target -> the column giving it
    for name in names:
        explicit = next((new for old, new in mapping.items() if old.casefold() == name.casefold()), None)
        target = explicit if explicit is not None else _ALIASES.get(_folded(name))
        if explicit is not None:
            plan.mapped[name] = explicit or "(ignored)"
        if not target:
            plan.targets.append(None)
            if explicit is None and name:
                plan.ignored.append(name)
            continue
        if target in given:
            raise ColumnError(
                f"the columns {given[target]!r} and {name!r} both give {target}; "
                f"ignore one with --map {name}= (or map it to another column)"
            )
        given[target] = name
        plan.targets.append(target)
    missing = [c for c in REQUIRED if c not in given]
    if missing:
        raise ColumnError(
            f"the header lacks required column(s): {', '.join(missing)} "
            f"(name them with --map, e.g. --map {names[0] if names else 'Email'}={missing[0]})"
        )
    return plan


def tenant_zone(name: str | None) -> dt.tzinfo:
    """The zone dates without an offset are in: Marketing Cloud system time, or the IANA zone named."""
    if not name:
        return MC_SYSTEM_TIME
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ColumnError(f"--time-zone {name!r} is no IANA time zone (e.g. America/New_York)") from None


def describe_zone(zone: dt.tzinfo) -> str:
    """The zone as a steward reads it (``Etc/GMT+6`` is UTC-6: POSIX inverts the sign)."""
    if zone is MC_SYSTEM_TIME:
        return "Marketing Cloud system time (UTC-06:00, no daylight saving)"
    return str(zone)


def in_tenant_time(value: str, zone: dt.tzinfo) -> str:
    """A date from the file as ISO 8601 with its offset (no offset given: in ``zone``).

    What is no date is returned as it is, so the field's own check reports it by line.
    """
    parsed = parse_mc_datetime(value)
    if parsed is None:
        return value
    if parsed.tzinfo is MC_SYSTEM_TIME and zone is not MC_SYSTEM_TIME:  # it named no offset
        parsed = parsed.replace(tzinfo=zone)
    return parsed.isoformat()
