"""The operations dashboard in the admin: what a lead wants at a glance.

Every figure is one bounded, indexed query (a 24-hour window, counts of small
queues), so the page stays fast on a hub with millions of records and events.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Min, Q
from django.db.models.functions import TruncHour
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from customers.choices import CandidateStatus, WritebackState
from customers.models import CrossReference, MatchCandidate
from integrations.choices import EventStatus, RunStatus
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.models import ReconciliationState
from integrations.models import ConnectorState, DeadLetter, InboundEvent, SyncRun
from integrations.queue import cluster_stalled, queue_depth
from integrations.replay import replay_dead_letter

HOURS = 24
SERIES = (("received", "#79aec8"), ("synced", "#2a7d2a"), ("failed", "#e0a000"), ("dead", "#ba2121"))


def _hourly(since: dt.datetime) -> list[dict[str, Any]]:
    hours = [since + dt.timedelta(hours=i) for i in range(HOURS)]
    buckets = {h: {"hour": h, "received": 0, "synced": 0, "failed": 0, "dead": 0} for h in hours}

    terminal = [EventStatus.SYNCED, EventStatus.SUPERSEDED]
    failing = [RunStatus.FAILED, RunStatus.WAITING]
    series = [
        ("received", InboundEvent.objects.filter(received_at__gte=since), "received_at"),
        ("synced", InboundEvent.objects.filter(received_at__gte=since, status__in=terminal), "received_at"),
        ("failed", SyncRun.objects.filter(started_at__gte=since, status__in=failing), "started_at"),
        ("dead", DeadLetter.objects.filter(created_at__gte=since), "created_at"),
    ]
    for name, queryset, when in series:
        for row in queryset.annotate(hour=TruncHour(when)).values("hour").annotate(n=Count("id")):
            if row["hour"] in buckets:
                buckets[row["hour"]][name] = row["n"]
    return [buckets[h] for h in hours]


def _chart(hourly: list[dict[str, Any]]) -> dict[str, Any]:
    """Bar geometry for a server-drawn SVG (no script, so the page works under the CSP)."""
    width, height, group = 720, 160, 30
    top = max([1] + [row[name] for row in hourly for name, _ in SERIES])
    bars = []
    for i, row in enumerate(hourly):
        for j, (name, colour) in enumerate(SERIES):
            value = row[name]
            h = round(value / top * (height - 20))
            bars.append(
                {
                    "x": i * group + 2 + j * 6,
                    "y": height - h,
                    "h": h,
                    "colour": colour,
                    "title": f"{row['hour']:%H}:00 {name}: {value}",
                }
            )
    # Ticks count back from the current hour, so the last group of bars always has its label.
    labels = [
        {"x": i * group + 2, "tick": i * group + 2 + group // 2 - 3, "text": f"{row['hour']:%H}"}
        for i, row in enumerate(hourly)
        if (len(hourly) - 1 - i) % 3 == 0
    ]
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "labels": labels,
        "top": top,
        "series": SERIES,
        "axis_end": len(hourly) * group,
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("integrations.view_inboundevent"):
        raise PermissionDenied
    now = timezone.now()
    since = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=HOURS - 1)
    hourly = _hourly(since)
    depth, oldest = queue_depth()
    pending = CrossReference.objects.filter(writeback_state=WritebackState.PENDING).aggregate(
        n=Count("id"), oldest=Min("writeback_due_at")
    )
    totals = {name: sum(row[name] for row in hourly) for name, _ in SERIES}
    context = {
        **admin.site.each_context(request),
        "title": "Operations dashboard",
        "totals": totals,
        "chart": _chart(hourly),
        "queue": {"depth": depth, "oldest": oldest, "stalled": cluster_stalled()},
        "writeback": {
            "pending": pending["n"],
            "oldest": pending["oldest"],
            "failed": CrossReference.objects.filter(writeback_state=WritebackState.FAILED).count(),
        },
        "candidates": MatchCandidate.objects.filter(status=CandidateStatus.OPEN).aggregate(
            n=Count("id"), oldest=Min("created_at")
        ),
        "breakers": ConnectorState.objects.order_by("system"),
        "dead_letters": DeadLetter.objects.filter(replayed_at__isnull=True).select_related("run").order_by("-id")[:10],
        "dead_open": DeadLetter.objects.filter(replayed_at__isnull=True).count(),
        "reconciliation": ReconciliationState.objects.order_by("de_key"),
        "business_units": business_units.unit_state(),
        "can_replay": request.user.has_perm("integrations.change_deadletter"),
        "unsynced_24h": InboundEvent.objects.filter(received_at__gte=since)
        .filter(~Q(status__in=[EventStatus.SYNCED, EventStatus.SUPERSEDED, EventStatus.REJECTED]))
        .count(),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def replay_view(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method != "POST" or not request.user.has_perm("integrations.change_deadletter"):
        raise PermissionDenied
    dead_letter = get_object_or_404(DeadLetter, pk=pk, replayed_at__isnull=True)
    replay_dead_letter(dead_letter, actor=f"user:{request.user.get_username()}")
    messages.success(request, f"Dead letter {pk} replayed: a new sync run is queued.")
    return HttpResponseRedirect(reverse("admin-dashboard"))
