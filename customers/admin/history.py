"""The history rows, read-only, and a golden record's timeline as a steward reads it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.dateparse import parse_datetime

from customers.admin.common import STEWARD_CSS, STEWARD_JS, LargeListMixin, short_master_id
from customers.models import CrossReference, HistoryEntry, Individual

# Keys of the before/after JSON that are internal bookkeeping, not something a steward changed.
_HIDDEN_KEYS = {"lineage", "pins"}


@dataclass
class Change:
    """One changed field of a history row: its name and its value before and after."""

    name: str
    before: str
    after: str


@dataclass
class Link:
    """A label, and the admin page it opens (empty when there is none to open)."""

    label: str
    url: str = ""


@dataclass
class TimelineItem:
    """A history row as the record page shows it: when, what, who, why and the changed fields."""

    entry: HistoryEntry
    what: Link | None
    who: Link
    why: str
    changes: list[Change] = field(default_factory=list)


def timeline_entries(individual: Individual, limit: int = 200) -> list[HistoryEntry]:
    """The record's history newest first, with that of the records merged into it."""
    ids = [individual.pk, *individual.merged_records.values_list("pk", flat=True)]
    return list(
        HistoryEntry.objects.filter(individual_id__in=ids)
        .select_related("actor_user")
        .order_by("-created_at", "-id")[:limit]
    )


def timeline(individual: Individual, limit: int = 200) -> list[TimelineItem]:
    """The record's history, readable: changed fields before → after, the actor and the source record linked.

    The source records the rows name are read in one query, whatever the number of rows.
    """
    entries = timeline_entries(individual, limit)
    xref_ids = {e.object_id for e in entries if e.object_type == "CrossReference" and e.object_id}
    xrefs = {x.pk: x for x in CrossReference.objects.filter(pk__in=xref_ids)} if xref_ids else {}
    return [_item(entry, individual, xrefs) for entry in entries]


def _item(entry: HistoryEntry, individual: Individual, xrefs: dict[int, CrossReference]) -> TimelineItem:
    after = entry.after if isinstance(entry.after, dict) else {}
    what: Link | None = None
    why = str(after.get("rule") or "")
    if entry.object_type == "CrossReference" and entry.object_id:
        xref = xrefs.get(entry.object_id)
        if xref is not None:
            url = reverse("admin:customers_crossreference_change", args=[xref.pk])
            what = Link(f"source record {xref.system} {xref.external_id}", url)
            if not why and entry.action in ("link", "relink") and xref.match_rule:
                why = f"matched by rule {xref.match_rule}"
        else:
            what = Link("a source record no longer held")
    elif entry.object_type == "Individual" and entry.object_id and entry.object_id != individual.pk:
        what = Link("golden record", reverse("admin:customers_individual_change", args=[entry.object_id]))
    return TimelineItem(entry=entry, what=what, who=actor_link(entry), why=why, changes=changes_of(entry))


def actor_link(entry: HistoryEntry) -> Link:
    """Who made the change: a sync run links to its page, a user to everything that user did."""
    kind, _, name = entry.actor.partition(":")
    if kind == "sync-run" and name.isdigit():
        return Link(f"sync run #{name}", reverse("admin:integrations_syncrun_change", args=[int(name)]))
    if kind == "user" and name:
        query = urlencode({"q": entry.actor})
        return Link(name, reverse("admin:customers_historyentry_changelist") + f"?{query}")
    return Link(entry.actor.replace(":", " ", 1) if kind and name else entry.actor)


def changes_of(entry: HistoryEntry) -> list[Change]:
    """The fields a row changed, before → after; nested values (a merge's snapshots) as ``outer inner``."""
    before = _flatten(entry.before)
    after = _flatten(entry.after)
    names = [*before, *(k for k in after if k not in before)]
    changes = [Change(name, readable(before.get(name)), readable(after.get(name))) for name in names]
    # Compared as shown, so an empty value "changing" from nothing to "" is no change.
    return [c for c in changes if c.before != c.after and c.name.split(" ")[-1] not in _HIDDEN_KEYS]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {} if value is None else {prefix or "value": value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        name = f"{prefix} {key}".strip().replace("_", " ")
        if isinstance(inner, dict):
            flat.update(_flatten(inner, name))
        else:
            flat[name] = inner
    return flat


def readable(value: Any) -> str:
    """A JSON value as a steward reads it: dates in the admin's one format, nothing as a dash."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(readable(v) for v in value) or "—"
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        moment = parse_datetime(value)
        if moment is not None:
            return format_moment(moment)
    return str(value)


def format_moment(moment: dt.datetime) -> str:
    """The one date-time format of the steward's pages (as the admin's DATETIME_FORMAT), in UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M")


@admin.register(HistoryEntry)
class HistoryEntryAdmin(LargeListMixin, admin.ModelAdmin):
    list_display = ["created_at", "record", "action", "object_type", "actor"]
    list_filter = ["action", "object_type", "created_at"]
    search_fields = ["=master_id", "actor"]
    readonly_fields = [f.name for f in HistoryEntry._meta.fields]

    class Media:
        css = STEWARD_CSS
        js = STEWARD_JS

    @admin.display(description="master ID", ordering="master_id")
    def record(self, obj: HistoryEntry) -> str:
        return short_master_id(obj.master_id, obj.individual_id)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
