"""Statuses a source system reports for its own records, applied to the golden records' consent.

A sending system (Marketing Cloud) keeps a status per subscriber: Active, Unsubscribed, Held or
Bounced. ``apply_source_statuses`` is the one place such a status reaches a golden record:

- Unsubscribed is an opt-out of all marketing (CIM doNotMarketFromUpdateDate) since the time
  the status changed; the earliest opt-out wins, as for every other opt-out.
- Held (the system stopped sending to the address after repeated bounces) marks the email
  contact point undeliverable (CIM ContactPoint.isUndeliverable) from that time, and is also
  do-not-market from then, as a journey call or a data-extension row with Status Held is read
  (``integrations.marketing_cloud.mapping``, shared reference §5): one status, one outcome,
  whichever way it arrives. Bounced records the latest bounce (CIM
  ContactPointEmail.emailLatestBounceDateTime) and is not consent.
- Active clears an undeliverable mark it is newer than; it never lifts an opt-out (a status
  read cannot tell a re-subscription from any other edit of the subscriber).

Each change is one history row on the golden record (before -> after, the source and the
reason). A status is applied only when it is newer than the last one applied for that source
record (``CrossReference.source_status_at``): the same read twice, or an older one arriving
late, changes nothing.

A system with several business units (Marketing Cloud's) reports a status per unit: a status
naming the units it came from (``business_units``, the cross reference values that mean that
unit) reaches only a cross reference of one of them. The same subscriber key reported by
another unit is another unit's subscriber, and its status there says nothing about this one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from customers.choices import ChangeType, ContactPointKind, HistoryAction
from customers.models import ContactPoint, CrossReference, Individual
from customers.normalize import normalize_email
from customers.stewardship import open_unit_of_work

UNSUBSCRIBED, HELD, BOUNCED, ACTIVE = "Unsubscribed", "Held", "Bounced", "Active"
KNOWN_STATUSES = frozenset({UNSUBSCRIBED, HELD, BOUNCED, ACTIVE})


@dataclass(frozen=True)
class SourceStatus:
    """One record's status as its system reports it, and when the system changed it."""

    system: str
    external_id: str
    status: str
    changed_at: dt.datetime
    email: str = ""  # the address the status is about (empty when the system named none)
    # The CrossReference.business_unit values the status may reach (its unit's MID, and "" for the
    # default unit); empty: any cross reference of the system (a system with one unit).
    business_units: tuple[str, ...] = ()


@dataclass
class StatusOutcome:
    """What ``apply_source_statuses`` did with each status it was given."""

    applied: int = 0  # newer than the last one applied: recorded, with a history row
    unchanged: int = 0  # read before, or older than the one applied
    unknown: int = 0  # no cross reference for (system, external ID), or only another business unit's
    ignored: int = 0  # a status this module has no meaning for (Deleted), or an erased record
    opted_out: list[int] = field(default_factory=list)  # golden records that got an opt-out


def _email_key(value: str) -> str:
    try:
        return normalize_email(value) if value else ""
    except ValueError:
        return ""


@transaction.atomic
def apply_source_statuses(statuses: list[SourceStatus], *, actor: str) -> StatusOutcome:
    """Apply source statuses to their golden records, in one transaction (see the module docstring)."""
    outcome = StatusOutcome()
    if not statuses:
        return outcome
    # The newest status per record: an older one in the same batch is already superseded.
    newest: dict[tuple[str, str], SourceStatus] = {}
    for status in statuses:
        key = (status.system, status.external_id)
        if key in newest and newest[key].changed_at >= status.changed_at:
            outcome.unchanged += 1
            continue
        if key in newest:
            outcome.unchanged += 1
        newest[key] = status
    xrefs = {
        (x.system, x.external_id): x
        for system in {s for s, _ in newest}
        for x in CrossReference.objects.filter(system=system, external_id__in=[e for s, e in newest if s == system])
    }
    # A cross reference of another business unit than the status's is not the subscriber it is about.
    xrefs = {
        key: x
        for key, x in xrefs.items()
        if not newest[key].business_units or x.business_unit in newest[key].business_units
    }
    outcome.unknown += sum(1 for key in newest if key not in xrefs)
    if not xrefs:
        return outcome
    individuals = list(Individual.objects.filter(pk__in={x.individual_id for x in xrefs.values()}))
    work, _ = open_unit_of_work(*individuals)
    # Locked now; read the cross references again (a merge may have moved one meanwhile).
    fresh = {
        (x.system, x.external_id): x
        for x in CrossReference.objects.select_for_update().filter(pk__in=[x.pk for x in xrefs.values()])
    }
    now = timezone.now()
    for key, status in sorted(newest.items(), key=lambda item: item[1].changed_at):
        xref = fresh.get(key)
        if xref is None:
            continue
        if status.business_units and xref.business_unit not in status.business_units:
            outcome.unknown += 1  # moved to another unit before the lock was taken
            continue
        if status.status not in KNOWN_STATUSES or xref.individual_id not in work.goldens:
            outcome.ignored += 1
            continue
        golden = work.golden(xref.individual_id)
        if golden.erased_at is not None:
            outcome.ignored += 1
            continue
        if xref.source_status_at is not None and status.changed_at <= xref.source_status_at:
            outcome.unchanged += 1
            continue
        before = {"system": xref.system, "external_id": xref.external_id, "source_status": xref.source_status}
        after = {
            "system": xref.system,
            "external_id": xref.external_id,
            "source_status": status.status,
            "changed_at": status.changed_at,
            "consent_source": xref.system,
        }
        email_key = _email_key(status.email)
        points = ContactPoint.objects.filter(individual_id=golden.pk, kind=ContactPointKind.EMAIL)
        if email_key:
            points = points.filter(value_key=email_key)
        if status.status == HELD:
            points.filter(undeliverable_since__isnull=True).update(undeliverable_since=status.changed_at)
            after["undeliverable_since"] = status.changed_at
        if status.status in (UNSUBSCRIBED, HELD):
            held = "the email address takes no mail; " if status.status == HELD else ""
            current = golden.values["do_not_market_since"]
            before["do_not_market_since"] = current
            if current is None or status.changed_at < current:
                golden.set("do_not_market_since", status.changed_at)
                golden.set("consent_source", xref.system[:40])
                outcome.opted_out.append(golden.pk)
                work.publish(
                    golden,
                    ChangeType.CONSENT,
                    actor=actor,
                    now=now,
                    change={"doNotMarketFromUpdateDate": status.changed_at, "source": xref.system[:40]},
                )
                after["reason"] = f"{xref.system} status {status.status}: {held}opted out of all marketing"
            else:
                after["reason"] = f"{xref.system} status {status.status}: {held}an opt-out as early or earlier is held"
            after["do_not_market_since"] = golden.values["do_not_market_since"]
        elif status.status == BOUNCED:
            points.update(latest_bounce_at=status.changed_at)
            after["reason"] = f"{xref.system} status {status.status}: the email address bounced"
            after["latest_bounce_at"] = status.changed_at
        else:  # Active
            cleared = points.filter(undeliverable_since__lt=status.changed_at).update(undeliverable_since=None)
            after["reason"] = f"{xref.system} status {status.status}" + (
                ": the email address takes mail again" if cleared else ""
            )
        CrossReference.objects.filter(pk=xref.pk).update(
            source_status=status.status[:40], source_status_at=status.changed_at, updated_at=now
        )
        work.record(
            golden,
            HistoryAction.CONSENT,
            actor=actor,
            now=now,
            object_type="CrossReference",
            object_id=xref.pk,
            before=before,
            after=after,
        )
        outcome.applied += 1
    work.flush(now)
    return outcome


__all__ = ["KNOWN_STATUSES", "SourceStatus", "StatusOutcome", "apply_source_statuses"]
