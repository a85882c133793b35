"""Run what django-q2's ORM broker holds, in this process, the way a worker would.

The tasks are the real signed packages the hub enqueued; only the cluster process
around them is skipped (tests that need the real ``qcluster`` start one).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import OrmQ
from django_q.signing import SignedPackage


def queued_tasks(*, ready_only: bool = False) -> list[dict[str, Any]]:
    rows = OrmQ.objects.order_by("lock", "id")
    if ready_only:
        rows = rows.filter(lock__lte=timezone.now())
    return [{"row": row, **SignedPackage.loads(row.payload)} for row in rows]


def run_queued(*, include_delayed: bool = True, limit: int | None = None) -> list[tuple[str, Any]]:
    """Run queued tasks oldest first until none is left; delayed ones too unless told not to.

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
        task = SignedPackage.loads(row.payload)
        row.delete()  # acknowledged, as the monitor would after success
        func = import_string(task["func"]) if isinstance(task["func"], str) else task["func"]
        done.append((task["func"], func(*task["args"], **task["kwargs"])))
    if limit:
        return done
    raise AssertionError("queue still not empty after 200 tasks")
