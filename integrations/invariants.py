"""The hub's invariants (reference: reliability-and-performance §3.1), checked against the data.

I1 durable ack: every event a client saw accepted has a stored row (needs the client's ledger).
I2 no silent drop: every event older than the retry window is terminal, with a reason when
   rejected or dead-lettered.
I3 no duplicate effects: one golden record per cross reference; one event row per idempotency key.
I4 Marketing Cloud agrees: each written cross reference's master ID is what the data extension holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from customers.choices import WritebackState
from customers.models import CrossReference
from integrations.choices import MARKETING_CLOUD, TERMINAL_EVENT_STATUSES, EventStatus
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.poller import row_to_subscriber
from integrations.models import InboundEvent


@dataclass
class Check:
    name: str
    checked: int
    violations: int
    examples: list[Any] = field(default_factory=list)
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return self.violations == 0


def check_ledger(accepted_ids: Iterable[int]) -> Check:
    ids = {int(i) for i in accepted_ids}
    stored = set(InboundEvent.objects.filter(pk__in=ids).values_list("pk", flat=True))
    missing = sorted(ids - stored)
    return Check("I1 every accepted event is stored", len(ids), len(missing), missing[:10])


def check_terminal(window: dt.timedelta) -> Check:
    cutoff = timezone.now() - window
    old = InboundEvent.objects.filter(received_at__lt=cutoff)
    stuck = old.exclude(status__in=TERMINAL_EVENT_STATUSES)
    unexplained = old.filter(status__in=[EventStatus.REJECTED, EventStatus.DEAD], reason="")
    bad = list(stuck.values_list("pk", flat=True)[:10]) + list(unexplained.values_list("pk", flat=True)[:10])
    return Check(
        f"I2 events older than {window} are terminal (with a reason)",
        old.count(),
        stuck.count() + unexplained.count(),
        bad,
    )


def check_unique_effects() -> list[Check]:
    dup_xrefs = CrossReference.objects.values("system", "external_id").annotate(n=Count("id")).filter(n__gt=1)
    dup_keys = InboundEvent.objects.values("idempotency_key").annotate(n=Count("id")).filter(n__gt=1)
    return [
        Check(
            "I3 one golden record per cross reference",
            CrossReference.objects.count(),
            dup_xrefs.count(),
            [f"{d['system']}:{d['external_id']}" for d in dup_xrefs[:10]],
        ),
        Check(
            "I3 one event row per idempotency key",
            InboundEvent.objects.count(),
            dup_keys.count(),
            [d["idempotency_key"] for d in dup_keys[:10]],
        ),
    ]


def check_marketing_cloud(client: Any = None, page_size: int = 2500) -> Check:
    """Read the whole data extension and compare master IDs with the written cross references."""
    client = client or MarketingCloudClient.from_settings()
    held: dict[str, str] = {}
    field_name = settings.MC_MASTER_ID_FIELD.lower()
    page = 1
    while True:
        body = client.request(
            "GET",
            f"/data/v1/customobjectdata/key/{quote(settings.MC_DE_KEY, safe='')}/rowset"
            f"?$page={page}&$pageSize={page_size}",
        )
        items = (body or {}).get("items") or []
        for item in items:
            values = {k.lower(): v for k, v in {**(item.get("values") or {}), **(item.get("keys") or {})}.items()}
            key = row_to_subscriber(item).get("SubscriberKey") or values.get(settings.MC_DE_PRIMARY_KEY.lower())
            if key:
                held[str(key)] = str(values.get(field_name) or "")
        if not items or not ((body or {}).get("links") or {}).get("next"):
            break
        page += 1
    written = (
        CrossReference.objects.filter(system=MARKETING_CLOUD)
        .filter(Q(writeback_state=WritebackState.WRITTEN) | Q(writeback_state=WritebackState.NOT_NEEDED))
        .select_related("individual")
    )
    checked = violations = 0
    examples: list[str] = []
    for xref in written.iterator(chunk_size=2000):
        if xref.writeback_state == WritebackState.NOT_NEEDED and not xref.source_master_id:
            continue  # never written and never reported: nothing to compare
        checked += 1
        if held.get(xref.external_id) != xref.individual.master_id:
            violations += 1
            if len(examples) < 10:
                examples.append(f"cross reference {xref.pk}")
    return Check("I4 Marketing Cloud holds each written master ID", checked, violations, examples)


def run_checks(
    *, window: dt.timedelta, ledger: Iterable[int] | None = None, compare_marketing_cloud: bool = False
) -> list[Check]:
    checks = [
        check_ledger(ledger)
        if ledger is not None
        else Check("I1 every accepted event is stored", 0, 0, skipped="no client ledger given (--ledger)")
    ]
    checks.append(check_terminal(window))
    checks += check_unique_effects()
    if compare_marketing_cloud:
        checks.append(check_marketing_cloud())
    else:
        checks.append(
            Check(
                "I4 Marketing Cloud holds each written master ID",
                0,
                0,
                skipped="not compared (--compare-marketing-cloud)",
            )
        )
    return checks
