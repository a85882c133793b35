"""Shared metric samples: what every process appends, and the fold that sums them (``integrations.metrics``).

Apart from the collector so that the transport layer, which records each call's duration, needs
nothing but the models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, connection, transaction

from integrations.models import MetricSample, MetricTotal

logger = logging.getLogger(__name__)

# Histogram bounds (seconds, or events for the batch size). A bound changed later applies to new
# samples only: keep them as they are once deployed.
HISTOGRAM_BOUNDS: dict[str, tuple[float, ...]] = {
    "resolver_batch_size": (1, 5, 10, 25, 50, 100, 250, 500, 1000),
    "resolver_batch_seconds": (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    "outbound_call_seconds": (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
}
# Label names of each stored metric, in the order its samples carry the values.
LABELS: dict[str, tuple[str, ...]] = {
    "events_received": ("source", "channel"),
    "events_entered": ("source", "channel", "status"),
    "events_current": ("source", "channel", "status"),
    "resolver_batch_size": (),
    "resolver_batch_seconds": (),
    "outbound_call_seconds": ("system", "status"),
}
# One advisory lock (the two-key form, apart from the engine's one-key identity locks) for folding.
_FOLD_LOCK = (0x6875_6220, 1)  # "hub " and the metrics fold


def observe(metric: str, labels: Sequence[str], value: float) -> None:
    """Record one observation of a histogram (or one increment of a counter) for every process to see."""
    observe_many([(metric, labels, value)])


def observe_many(observations: Sequence[tuple[str, Sequence[str], float]]) -> None:
    """Record several observations in one INSERT, in the caller's transaction (rolled back with it).

    Inside a transaction the INSERT gets a savepoint, so that a failure to record never fails the
    work it measures; the samples are then dropped, with a warning.
    """
    rows = []
    for metric, labels, value in observations:
        if metric not in LABELS or len(labels) != len(LABELS[metric]):
            raise ValueError(f"metric {metric} takes labels {LABELS.get(metric)}, not {list(labels)}")
        rows.append(MetricSample(metric=metric, labels=[str(v)[:64] for v in labels], value=float(value)))
    try:
        if connection.in_atomic_block:
            with transaction.atomic():
                MetricSample.objects.bulk_create(rows)
        else:
            MetricSample.objects.bulk_create(rows)
    except DatabaseError as exc:
        logger.warning("%s metric sample(s) dropped: %s", len(rows), type(exc).__name__)


def fold_samples() -> int:
    """Move the samples appended since the last fold into their totals; returns how many were folded.

    Runs at every scrape and from the resolver sweep (every minute), so the sample table stays small
    whether Prometheus scrapes or not. Samples committed while a fold runs are left for the next one.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", list(_FOLD_LOCK))
        cursor.execute(f"DELETE FROM {MetricSample._meta.db_table} RETURNING metric, labels, value")
        rows = cursor.fetchall()
        if not rows:
            return 0
        folded: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
        for metric, labels, value in rows:
            bounds = HISTOGRAM_BOUNDS.get(metric, ())
            entry = folded.setdefault((metric, tuple(labels)), [0, 0.0, [0] * (len(bounds) + 1 if bounds else 0)])
            entry[0] += 1
            entry[1] += value
            if bounds:
                # The first bucket whose bound holds the value; the last one is +Inf.
                entry[2][next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))] += 1
        table = MetricTotal._meta.db_table
        for (metric, labels), (count, total, buckets) in sorted(folded.items()):
            cursor.execute(
                f"""
                INSERT INTO {table} AS t (metric, labels, count, total, buckets)
                VALUES (%s, %s::varchar[], %s, %s, %s::bigint[])
                ON CONFLICT (metric, labels) DO UPDATE SET
                    count = t.count + excluded.count,
                    total = t.total + excluded.total,
                    buckets = ARRAY(
                        SELECT coalesce(a, 0) + coalesce(b, 0)
                        FROM unnest(t.buckets, excluded.buckets) WITH ORDINALITY AS x(a, b, n) ORDER BY n
                    )
                """,
                [metric, list(labels), count, total, buckets],
            )
    return len(rows)
