"""Run what django-q2's ORM broker holds, in this process, the way a worker would.

The tasks are the real signed packages the hub enqueued; only the cluster process
around them is skipped (tests that need the real ``qcluster`` start one). Delayed
tasks are run by fast-forwarding: every stored "not before" time (queue rows,
write-back, unsubscribe and contact-deletion due times, bulk write-back polls, the connectors' and
targets' pauses and breakers) moves earlier by the wait, as if that much time had passed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import OrmQ
from django_q.signing import SignedPackage


def queued_tasks(*, ready_only: bool = False) -> list[dict[str, Any]]:
    rows = OrmQ.objects.order_by("lock", "id")
    if ready_only:
        rows = rows.filter(lock__lte=timezone.now())
    return [{"row": row, **SignedPackage.loads(row.payload)} for row in rows]


def fast_forward(delta: dt.timedelta) -> None:
    """Pretend ``delta`` has passed for everything the hub schedules by wall-clock time."""
    from customers.models import CrossReference
    from integrations.models import ConnectorState, InboundEvent, SyncRun

    OrmQ.objects.update(lock=F("lock") - delta)
    InboundEvent.objects.update(visible_at=F("visible_at") - delta)
    CrossReference.objects.filter(writeback_due_at__isnull=False).update(writeback_due_at=F("writeback_due_at") - delta)
    SyncRun.objects.filter(next_attempt_at__isnull=False).update(next_attempt_at=F("next_attempt_at") - delta)
    ConnectorState.objects.filter(paused_until__isnull=False).update(paused_until=F("paused_until") - delta)
    ConnectorState.objects.filter(open_until__isnull=False).update(open_until=F("open_until") - delta)
    ConnectorState.objects.update(updated_at=F("updated_at") - delta)
    from integrations.downstream.models import Delivery

    Delivery.objects.filter(status=Delivery.PENDING).update(next_attempt_at=F("next_attempt_at") - delta)
    from integrations.models import QueuedFlag

    QueuedFlag.objects.filter(wake_at__isnull=False).update(wake_at=F("wake_at") - delta)
    from integrations.marketing_cloud.models import BulkWriteback, ContactDeletion, UnsubscribeWriteback

    UnsubscribeWriteback.objects.filter(due_at__isnull=False).update(due_at=F("due_at") - delta)
    ContactDeletion.objects.filter(due_at__isnull=False).update(due_at=F("due_at") - delta)
    ContactDeletion.objects.filter(next_poll_at__isnull=False).update(next_poll_at=F("next_poll_at") - delta)
    in_flight = BulkWriteback.objects.filter(state__in=BulkWriteback.IN_FLIGHT)
    in_flight.update(claimed_at=F("claimed_at") - delta)
    for moment in ("submitted_at", "next_poll_at", "last_polled_at"):
        in_flight.filter(**{f"{moment}__isnull": False}).update(**{moment: F(moment) - delta})


def run_queued(*, include_delayed: bool = True, limit: int | None = None) -> list[tuple[str, Any]]:
    """Run queued tasks in visibility order until none is left (delayed ones by fast-forwarding).

    Returns (function path, result) per task run. With ``limit``, runs at most that
    many; without, a guard of 200 catches a task that re-queues itself forever.
    """
    done: list[tuple[str, Any]] = []
    for _ in range(limit or 200):
        rows = OrmQ.objects.order_by("lock", "id")
        if not include_delayed:
            rows = rows.filter(lock__lte=timezone.now())
        row = rows.first()
        if row is None:
            return done
        wait = row.lock - timezone.now()
        if wait > dt.timedelta(0):
            fast_forward(wait + dt.timedelta(milliseconds=1))
        task = SignedPackage.loads(row.payload)
        row.delete()  # acknowledged, as the monitor would after success
        func = import_string(task["func"]) if isinstance(task["func"], str) else task["func"]
        done.append((task["func"], func(*task["args"], **task["kwargs"])))
    if limit:
        return done
    raise AssertionError("queue still not empty after 200 tasks")
