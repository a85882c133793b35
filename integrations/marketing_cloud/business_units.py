"""Marketing Cloud business units: which unit a call came from, and which one a write goes to.

One installed package (client ID and secret) serves every unit of an enterprise; the token
request's ``account_id`` (the unit's MID) picks the unit a token acts on (shared reference §3.4, §6).
Each unit has its own data extension key, Journey Builder JWT signing secret and ENS signature key.

``MC_BUSINESS_UNITS`` configures them (``hub.env.env_business_units``); unset, the hub has one
implicit unit made of ``MC_ACCOUNT_ID`` (its MID, possibly blank), ``MC_DE_KEY``, ``MC_JWT_SECRET`` and
``MC_ENS_SIGNATURE_KEY``, read when asked so it follows the settings as they are. A cross reference
whose ``business_unit`` is blank belongs to the default unit, the first one configured.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.db.models import Count, QuerySet
from django.utils import timezone

from customers.choices import WritebackState
from customers.models import CrossReference
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud.models import (
    EnsNotification,
    ReconciliationState,
    SubscriberStatusSync,
    UnsubscribeWriteback,
)
from integrations.models import AccessToken

T = TypeVar("T")

# The CIM Individual's field naming the unit a record came from (read by the resolver).
BUSINESS_UNIT_FIELD = "businessUnitMid"


@dataclass(frozen=True)
class BusinessUnit:
    name: str
    mid: str
    de_key: str
    jwt_secret: str
    ens_signature_key: str
    # Configured through MC_BUSINESS_UNITS, rather than the implicit single unit.
    configured: bool = True

    @property
    def token_system(self) -> str:
        """The key of this unit's cached token: one token per MID (the single implicit unit keeps today's)."""
        return f"{MARKETING_CLOUD}:{self.mid}" if self.configured else MARKETING_CLOUD

    @property
    def state_key(self) -> str:
        """What a per-unit state row (a poller's watermark) is keyed by: blank for the implicit single unit."""
        return self.mid if self.configured else ""

    @property
    def label(self) -> str:
        return f"{self.name} (MID {self.mid})" if self.mid else self.name


def units() -> tuple[BusinessUnit, ...]:
    """Every business unit, the default one first."""
    if settings.MC_BUSINESS_UNITS:
        return tuple(BusinessUnit(**unit) for unit in settings.MC_BUSINESS_UNITS)
    return (
        BusinessUnit(
            name="default",
            mid=settings.MC_ACCOUNT_ID,
            de_key=settings.MC_DE_KEY,
            jwt_secret=settings.MC_JWT_SECRET,
            ens_signature_key=settings.MC_ENS_SIGNATURE_KEY,
            configured=False,
        ),
    )


def default_unit() -> BusinessUnit:
    return units()[0]


def unit_for_mid(mid: str) -> BusinessUnit | None:
    """The unit with this MID; a blank MID is the default unit; None for a MID no longer configured."""
    if not mid:
        return default_unit()
    return next((unit for unit in units() if unit.mid == mid), None)


def group_by_unit(items: Iterable[T], mid_of: Callable[[T], str]) -> list[tuple[str, BusinessUnit | None, list[T]]]:
    """``items`` grouped by their business unit: (MID, unit or None when not configured, items), in first-seen order.

    A blank MID and the default unit's MID are one group.
    """
    groups: dict[str, tuple[BusinessUnit | None, list[T]]] = {}
    for item in items:
        mid = mid_of(item)
        unit = unit_for_mid(mid)
        key = unit.mid if unit is not None else mid
        groups.setdefault(key, (unit, []))[1].append(item)
    return [(mid, unit, members) for mid, (unit, members) in groups.items()]


def cross_reference_scope(unit: BusinessUnit | None) -> tuple[str, ...]:
    """The ``CrossReference.business_unit`` values that are ``unit``'s subscribers; () for any.

    () for the single unit configured the MC_* way (or no unit known): every cross reference is
    its. The default unit's are its MID and blank (recorded before units were configured).
    """
    if unit is None or not unit.configured:
        return ()
    return (unit.mid, "") if unit == default_unit() else (unit.mid,)


def not_configured(mid: str) -> str:
    return f"business unit MID {mid} is not configured (MC_BUSINESS_UNITS)"


def unit_state() -> list[dict[str, object]]:
    """Per business unit, for the dashboard: write-backs pending and failed, unsubscribes pending, its token,
    its reconciliation's and status read's last run, and the ENS notifications its key verified.

    Counted over the pending and failed rows only (indexed by write-back state), and ENS over the last 24
    hours (indexed by received time) and the notifications not applied yet, never over every record.
    """
    pending = _counts(CrossReference.objects.filter(system=MARKETING_CLOUD, writeback_state=WritebackState.PENDING))
    failed = _counts(CrossReference.objects.filter(system=MARKETING_CLOUD, writeback_state=WritebackState.FAILED))
    unsubscribes = _counts(
        UnsubscribeWriteback.objects.filter(state=UnsubscribeWriteback.PENDING), "cross_reference__business_unit"
    )
    all_units = units()
    tokens = {t.system: t for t in AccessToken.objects.filter(system__in=[u.token_system for u in all_units])}
    reconciliations = {(r.business_unit, r.de_key): r for r in ReconciliationState.objects.all()}
    status_reads = {r.business_unit: r for r in SubscriberStatusSync.objects.all()}
    ens_day = _counts(EnsNotification.objects.filter(received_at__gte=timezone.now() - dt.timedelta(hours=24)))
    ens_waiting = _counts(EnsNotification.objects.filter(status=EnsNotification.RECEIVED))
    rows: list[dict[str, object]] = []
    for position, unit in enumerate(all_units):
        mids = {unit.mid, ""} if position == 0 else {unit.mid}  # a blank MID is the default unit's
        token = tokens.get(unit.token_system)
        rows.append(
            {
                "unit": unit,
                "pending": sum(pending.get(m, 0) for m in mids),
                "failed": sum(failed.get(m, 0) for m in mids),
                "unsubscribes": sum(unsubscribes.get(m, 0) for m in mids),
                "token_expires_at": token.expires_at if token and token.access_token else None,
                "token_fetched_at": token.fetched_at if token and token.access_token else None,
                "reconciliation": reconciliations.get((unit.state_key, unit.de_key)),
                "status_read": status_reads.get(unit.state_key),
                "ens_24h": sum(ens_day.get(m, 0) for m in mids),
                "ens_waiting": sum(ens_waiting.get(m, 0) for m in mids),
            }
        )
    known = {m for u in all_units for m in (u.mid, "")}
    orphan_pending = sum(n for m, n in pending.items() if m not in known)
    orphan_failed = sum(n for m, n in failed.items() if m not in known)
    if orphan_pending or orphan_failed:
        rows.append({"unit": None, "pending": orphan_pending, "failed": orphan_failed, "unsubscribes": 0})
    return rows


def _counts(queryset: QuerySet, field: str = "business_unit") -> dict[str, int]:
    return {row[field]: row["n"] for row in queryset.values(field).annotate(n=Count("id")).order_by()}
