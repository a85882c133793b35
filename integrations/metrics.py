"""``/metrics``: the hub's figures in Prometheus' text format, read from PostgreSQL at scrape time.

Why from the database and not from counters in each process: the hub runs as several gunicorn
workers and several qcluster processes on several hosts, all sharing one PostgreSQL. In-process
``prometheus_client`` counters would give each scrape the figures of whichever worker answered;
its multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) fixes that only within one host, and only for
processes that share that directory with the one serving ``/metrics`` (a qcluster on a host
without a web server would go unseen). So every figure here is the whole hub's, whichever worker
on whichever host is scraped:

- **State** (queue depth, the oldest ready event, the write-back backlog, downstream lag, open
  match candidates, breaker states) is counted from its own table at scrape time, each through an
  index that holds only the rows in that state (the queue's, the pending write-backs', the open
  candidates', the undelivered deliveries'), so a scrape costs what the backlog is, not what the
  tables hold.
- **Counters and histograms** (events received/synced/failed/dead-lettered, resolver batches,
  outbound call latency) are appended as ``MetricSample`` rows by whichever process saw them: the
  event counters by a statement trigger on the event table (migration 0017), the others by
  :func:`observe`. A scrape first folds the samples into ``MetricTotal`` (one row per metric and
  label set), under an advisory lock so that two scrapes do not fold the same rows, then reads
  the totals: a few dozen rows, however many events the hub has stored.

Scrape a single target (any web worker behind the load balancer): every answer is the hub's total.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_q.models import OrmQ
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from customers.models import ChangeEvent, CrossReference, MatchCandidate
from hub.problems import problem_response
from integrations.choices import PENDING_EVENT_STATUSES, EventStatus
from integrations.downstream.models import Delivery
from integrations.metric_samples import HISTOGRAM_BOUNDS, LABELS, fold_samples
from integrations.models import ConnectorState, InboundEvent, MetricTotal


def _totals() -> dict[str, list[tuple[tuple[str, ...], int, float, list[int]]]]:
    found: dict[str, list[tuple[tuple[str, ...], int, float, list[int]]]] = {}
    for row in MetricTotal.objects.order_by("metric", "labels").values_list(
        "metric", "labels", "count", "total", "buckets"
    ):
        metric, labels, count, total, buckets = row
        found.setdefault(metric, []).append((tuple(labels), count, total, list(buckets)))
    return found


def _event_counters(totals: dict[str, Any]) -> Iterator[Metric]:
    received = CounterMetricFamily(
        "hub_events_received",
        "Inbound events stored (accepted or rejected), by source and channel",
        labels=["source", "channel"],
    )
    for labels, _, total, _ in totals.get("events_received", []):
        received.add_metric(list(labels), total)
    yield received
    entered: dict[str, dict[tuple[str, str], float]] = {}
    for (source, channel, status), _, total, _ in totals.get("events_entered", []):
        entered.setdefault(status, {})[(source, channel)] = total
    described = [
        ("hub_events_synced", "Inbound events that reached synced", [EventStatus.SYNCED]),
        (
            "hub_events_failed",
            "Failed processing attempts of inbound events (each retry scheduled, and each dead letter)",
            [EventStatus.RETRYING, EventStatus.DEAD],
        ),
        ("hub_events_dead_lettered", "Inbound events dead-lettered", [EventStatus.DEAD]),
        ("hub_events_rejected", "Inbound events refused at intake (kept with their reason)", [EventStatus.REJECTED]),
        (
            "hub_events_superseded",
            "Inbound events older than what the source had already sent",
            [EventStatus.SUPERSEDED],
        ),
    ]
    for name, documentation, statuses in described:
        family = CounterMetricFamily(name, documentation, labels=["source", "channel"])
        summed: dict[tuple[str, str], float] = {}
        for status in statuses:
            for key, total in entered.get(status, {}).items():
                summed[key] = summed.get(key, 0.0) + total
        for (source, channel), total in sorted(summed.items()):
            family.add_metric([source, channel], total)
        yield family
    current = GaugeMetricFamily(
        "hub_events", "Inbound events stored now, by source, channel and status", labels=["source", "channel", "status"]
    )
    for labels, _, total, _ in totals.get("events_current", []):
        if total:
            current.add_metric(list(labels), total)
    yield current


def _histogram(name: str, documentation: str, metric: str, totals: dict[str, Any]) -> HistogramMetricFamily:
    bounds = HISTOGRAM_BOUNDS[metric]
    family = HistogramMetricFamily(name, documentation, labels=list(LABELS[metric]))
    for labels, _, total, buckets in totals.get(metric, []):
        cumulative, running = [], 0
        padded = (buckets + [0] * (len(bounds) + 1))[: len(bounds) + 1]
        for bound, observed in zip([*bounds, math.inf], padded, strict=True):
            running += observed
            cumulative.append(("+Inf" if bound == math.inf else _bound_text(bound), running))
        family.add_metric(list(labels), cumulative, sum_value=total)
    return family


def _bound_text(bound: float) -> str:
    return str(float(bound))


def _scalar(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return cursor.fetchall()


def _state_gauges() -> Iterator[Metric]:
    """Figures counted from their tables now, each through an index of the rows in that state only."""
    now = timezone.now()
    events = InboundEvent._meta.db_table
    pending = ", ".join(f"'{s}'" for s in PENDING_EVENT_STATUSES)
    depth = GaugeMetricFamily(
        "hub_queue_events",
        "Inbound events still in the resolver's queue, by status (ready or waiting)",
        labels=["status"],
    )
    counts = dict(_scalar(f"SELECT status, count(*) FROM {events} WHERE status IN ({pending}) GROUP BY status"))
    for status in PENDING_EVENT_STATUSES:
        depth.add_metric([status], counts.get(status, 0))
    yield depth
    # The partial queue index, in id order: the first ready one is the oldest ready.
    oldest = _scalar(
        f"SELECT received_at FROM {events} WHERE status IN ({pending}) AND visible_at <= now() ORDER BY id LIMIT 1"
    )
    yield GaugeMetricFamily(
        "hub_queue_oldest_ready_event_age_seconds",
        "Age (since it was received) of the oldest inbound event ready to be claimed; 0 when none is",
        value=(now - oldest[0][0]).total_seconds() if oldest else 0.0,
    )
    tasks = OrmQ.objects.using(settings.Q_CLUSTER["orm"])
    ready_tasks = tasks.filter(lock__lte=now)
    task_depth = GaugeMetricFamily("hub_queue_tasks", "django-q2 tasks queued, ready or delayed", labels=["state"])
    ready_count = ready_tasks.count()
    task_depth.add_metric(["ready"], ready_count)
    task_depth.add_metric(["delayed"], tasks.count() - ready_count)
    yield task_depth
    oldest_task = ready_tasks.order_by("lock").values_list("lock", flat=True).first()
    yield GaugeMetricFamily(
        "hub_queue_oldest_ready_task_age_seconds",
        "How long the oldest ready django-q2 task has been ready; 0 when none is",
        value=(now - oldest_task).total_seconds() if oldest_task else 0.0,
    )
    backlog = GaugeMetricFamily(
        "hub_writeback_backlog",
        "Cross references whose master ID waits to be written back, by system",
        labels=["system"],
    )
    for system, count in _scalar(
        f"SELECT system, count(*) FROM {CrossReference._meta.db_table} "
        "WHERE writeback_state = 'pending' GROUP BY system ORDER BY system"
    ):
        backlog.add_metric([system], count)
    yield backlog
    lag = GaugeMetricFamily(
        "hub_downstream_lag_seconds",
        "Age of the oldest change not yet delivered to a downstream target (pending or dead-lettered)",
        labels=["target"],
    )
    undelivered = GaugeMetricFamily(
        "hub_downstream_undelivered", "Deliveries not yet delivered, by target and status", labels=["target", "status"]
    )
    deliveries, changes = Delivery._meta.db_table, ChangeEvent._meta.db_table
    for target, status, count in _scalar(
        f"SELECT target_id, status, count(*) FROM {deliveries} "
        "WHERE status IN ('pending', 'dead') GROUP BY target_id, status ORDER BY target_id, status"
    ):
        undelivered.add_metric([str(target), status], count)
    for target, created in _scalar(
        # The oldest change is the lowest change id (ids are handed out in time order).
        f"SELECT d.target_id, c.created_at FROM ("
        f"  SELECT target_id, min(change_id) AS change_id FROM {deliveries}"
        "  WHERE status IN ('pending', 'dead') GROUP BY target_id"
        f") AS d JOIN {changes} AS c ON c.id = d.change_id ORDER BY d.target_id"
    ):
        lag.add_metric([str(target)], max(0.0, (now - created).total_seconds()))
    yield lag
    yield undelivered
    yield GaugeMetricFamily(
        "hub_match_candidates_open",
        "Possible duplicates waiting in the review queue",
        value=MatchCandidate.objects.filter(status="open").count(),
    )
    yield from _breaker_gauges()


def _breaker_gauges() -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "hub_breaker_state",
        "Circuit breaker of each external system (MARKETING_CLOUD, target:<id>): 1 for its current state",
        labels=["system", "state"],
    )
    paused = GaugeMetricFamily(
        "hub_connector_paused", "1 while the system asked the hub to wait (429) and nobody calls it", labels=["system"]
    )
    now = timezone.now()
    for system, breaker, paused_until in ConnectorState.objects.order_by("system").values_list(
        "system", "breaker_state", "paused_until"
    ):
        for name, _ in ConnectorState.BREAKER_STATES:
            state.add_metric([system, name], 1.0 if breaker == name else 0.0)
        paused.add_metric([system], 1.0 if paused_until and paused_until > now else 0.0)
    yield state
    yield paused


class HubCollector:
    """A ``prometheus_client`` collector whose every figure is read from the database when scraped."""

    def collect(self) -> Iterator[Metric]:
        fold_samples()
        totals = _totals()
        yield from _event_counters(totals)
        yield _histogram(
            "hub_resolver_batch_size",
            "Events in each batch the resolver resolved together",
            "resolver_batch_size",
            totals,
        )
        yield _histogram(
            "hub_resolver_batch_duration_seconds",
            "Wall time of each resolver batch (its transaction, from the claimed rows to the commit)",
            "resolver_batch_seconds",
            totals,
        )
        yield _histogram(
            "hub_outbound_call_duration_seconds",
            "Calls to Marketing Cloud and downstream systems, by system and answer (HTTP status, or "
            "timeout, network_error, not_sent)",
            "outbound_call_seconds",
            totals,
        )
        yield from _state_gauges()


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector())  # type: ignore[arg-type]  # a collector is anything with collect()
    return registry


def _bearer_token(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: 404 while ``HUB_METRICS_TOKEN`` is unset, 401 without its bearer token."""
    expected = settings.METRICS_TOKEN
    if not expected:
        return problem_response(404, "Not found", "Metrics are off: set HUB_METRICS_TOKEN to expose /metrics.")
    if not hmac.compare_digest(_bearer_token(request).encode(), expected.encode()):
        response = problem_response(401, "Unauthorized", "Send Authorization: Bearer <HUB_METRICS_TOKEN>.")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
