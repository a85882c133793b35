"""The task queue: django-q2's ORM broker, delayed enqueue, coalesced wake-ups, and the health of both queues.

Two queues share the database. Inbound events are their own queue (``InboundEvent``,
claimed by ``integrations.resolver``); everything else (the resolver's wake-ups, write-back
flushes, downstream deliveries, reconciliation) is a django-q2 task in its ORM broker.

django-q2's ORM broker hands out a queued row once its ``lock`` time has passed (that
column is its visibility timeout). Writing a future ``lock`` at insert time therefore
delays a task without any worker sleeping, which is how retries honour ``Retry-After``
and back off. The row is written through the default database connection, so an
enqueue inside ``transaction.atomic()`` commits or rolls back with the data it belongs to.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
from typing import Any
from uuid import uuid4

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.humanhash import uuid
from django_q.models import OrmQ, Task
from django_q.signing import BadSignature, SignedPackage
from django_q.tasks import async_task

from integrations.choices import PENDING_EVENT_STATUSES
from integrations.models import InboundEvent, QueuedFlag

_not_before: contextvars.ContextVar[dt.datetime | None] = contextvars.ContextVar("hub_not_before", default=None)


class HubOrmBroker(ORM):
    """The ORM broker with an optional earliest-run time for the task being enqueued."""

    def enqueue(self, task: Any) -> int:
        visible_at = timezone.now()
        not_before = _not_before.get()
        if not_before is not None and not_before > visible_at:
            visible_at = not_before
        package = self.get_connection().create(key=self.list_key or Conf.CLUSTER_NAME, payload=task, lock=visible_at)
        return package.pk

    def dequeue(self) -> list[tuple[int, str]] | None:
        """django-q2's dequeue; a coalesced task counts as started once a cluster has taken it.

        A cluster whose workers are all busy still takes tasks into its local queue. Were the
        flag cleared only when the task starts, a busy host would hold the one wake-up while
        another host's workers sat idle; cleared here, the next wake-up goes to whoever is free.
        """
        taken = super().dequeue()
        names = [name for _, payload in taken or [] if (name := _task_name(payload))]
        if names:
            QueuedFlag.objects.filter(name__in=names, queued=True).update(queued=False)
        return taken


def _task_name(payload: str) -> str | None:
    try:
        return SignedPackage.loads(payload).get("name")
    except (TypeError, BadSignature):  # the pusher fails such a task itself
        return None


def broker_key() -> str:
    """The ``key`` column django-q2's ORM broker files this cluster's tasks under (its list key).

    Read from the settings, not from a broker instance: making an ORM broker outside a
    transaction closes the database connection (django-q2 calls ``close_old_connections``).
    """
    return Conf.CLUSTER_NAME


def task_package(func: str, *args: Any, name: str) -> str:
    """A task as django-q2 signs it for its broker (what ``async_task`` would enqueue).

    For statements that write the queue row themselves, in the same statement as the
    data it belongs to (``integrations.intake``).
    """
    tag = uuid()
    return SignedPackage.dumps(
        {"id": tag[1], "name": name, "func": func, "args": args, "kwargs": {}, "started": timezone.now()}
    )


def enqueue(func: str, *args: Any, delay: float = 0.0, task_name: str | None = None) -> str:
    """Queue ``func`` (dotted path) with ``args``; with ``delay`` seconds, not before then."""
    token = _not_before.set(timezone.now() + dt.timedelta(seconds=delay) if delay > 0 else None)
    try:
        options: dict[str, Any] = {}
        if task_name:
            options["task_name"] = task_name
        return async_task(func, *args, **options)
    finally:
        _not_before.reset(token)


def enqueue_once(func: str, *args: Any, flag: str) -> bool:
    """Queue ``func`` unless a run of it is already queued and not yet started.

    Runs in the caller's transaction: the flag and the queue row commit together. The
    task must call ``task_started(flag)`` first thing, so requests arriving while it
    runs queue the next run. Returns True when a task was queued.
    """
    QueuedFlag.objects.get_or_create(name=flag)
    # Matches (and locks) only while idle; once a committed "queued" is seen, no lock is taken.
    if QueuedFlag.objects.filter(name=flag, queued=False).update(queued=True):
        enqueue(func, *args, task_name=flag)
        return True
    return False


def task_started(flag: str) -> None:
    QueuedFlag.objects.filter(name=flag, queued=True).update(queued=False)


def enqueue_wake_up(func: str, *args: Any, flag: str, delay: float) -> bool:
    """Queue ``func`` to run in ``delay`` seconds, unless a wake-up at least as early is queued.

    The earliest wake-up runs and asks for the next one, so however many callers want
    "run me later", one delayed task at a time is waiting.
    """
    when = timezone.now() + dt.timedelta(seconds=max(delay, 0.0))
    QueuedFlag.objects.get_or_create(name=flag)
    stale = timezone.now() - dt.timedelta(seconds=Conf.RETRY)  # a wake-up lost with a dead worker
    claimed = (
        QueuedFlag.objects.filter(name=flag)
        .filter(Q(wake_at__isnull=True) | Q(wake_at__gt=when) | Q(wake_at__lt=stale))
        .update(wake_at=when)
    )
    if claimed:
        enqueue(func, *args, delay=delay, task_name=f"{flag}-wake-up")
        return True
    return False


def wake_up_started(flag: str) -> None:
    QueuedFlag.objects.filter(name=flag, wake_at__lte=timezone.now()).update(wake_at=None)


def take_lease(name: str, seconds: float) -> str | None:
    """Hold the work called ``name`` for ``seconds``, if nobody holds it; the holder's token, else None.

    A row, not a session-level advisory lock: behind PgBouncer in transaction mode a session lock
    would stay on whichever server connection took it (and its unlock could run on another). A
    holder that dies keeps the work until the lease ends, then anyone may take it.
    """
    token = f"{settings.INSTANCE_NAME}:{os.getpid()}:{uuid4()}"
    QueuedFlag.objects.get_or_create(name=name)
    # The database's clock, as for the resolver's claims: hosts' clocks may disagree.
    taken = (
        QueuedFlag.objects.filter(name=name)
        .filter(Q(held_until__isnull=True) | Q(held_until__lte=Now()))
        .update(held_by=token, held_until=Now() + dt.timedelta(seconds=seconds))
    )
    return token if taken else None


def release_lease(name: str, token: str) -> None:
    """Give the work back, if this holder still holds it (a lease that ran out may be someone else's)."""
    QueuedFlag.objects.filter(name=name, held_by=token).update(held_by="", held_until=None)


# ---------------------------------------------------------------------------
# Health of the queues
# ---------------------------------------------------------------------------
def _ready_events() -> Any:
    return InboundEvent.objects.filter(status__in=PENDING_EVENT_STATUSES, visible_at__lte=timezone.now())


def queue_depth() -> tuple[int, float | None]:
    """(work waiting or running: tasks plus events, age in seconds of the oldest ready item)."""
    now = timezone.now()
    tasks = OrmQ.objects.using(Conf.ORM)
    depth = tasks.count() + InboundEvent.objects.filter(status__in=PENDING_EVENT_STATUSES).count()
    oldest_task = tasks.filter(lock__lte=now).order_by("lock").values_list("lock", flat=True).first()
    oldest_event = _ready_events().order_by("id").values_list("visible_at", flat=True).first()
    oldest = min((t for t in (oldest_task, oldest_event) if t is not None), default=None)
    return depth, (now - oldest).total_seconds() if oldest else None


STALL_SECONDS = 90.0


def last_task_finished_at() -> dt.datetime | None:
    return Task.objects.order_by("-stopped").values_list("stopped", flat=True).first()


def cluster_stalled(threshold: float = STALL_SECONDS) -> bool:
    """True when work is ready but no task has finished for ``threshold`` seconds.

    Progress, not the age of the oldest ready item: with a backlog that age grows while
    the cluster works flat out. What a supervisor (systemd, a liveness check on
    /api/health, ``run_hub``) acts on by restarting ``qcluster``.
    """
    now = timezone.now()
    if not OrmQ.objects.using(Conf.ORM).filter(lock__lte=now).exists() and not _ready_events().exists():
        return False
    last = last_task_finished_at()
    if last is None:
        _, oldest = queue_depth()
        return oldest is not None and oldest > threshold
    return (now - last).total_seconds() > threshold
