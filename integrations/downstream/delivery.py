"""Delivering golden-record changes to downstream targets, in order per person, retried.

1. ``fan_out`` turns new change events (the outbox, written in each change's
   transaction) into one delivery per enabled target that wants that change type.
   One fan-out runs at a time, so deliveries of one person appear in change order.
2. ``deliver(target)`` sends, for every person, only the oldest undelivered change
   (the head of that person's queue for that target): a later change is never sent
   before an earlier one, and a person whose head keeps failing holds up nobody else.
   A dead-lettered head blocks that person's later changes until it is replayed.
3. Transient failures retry with capped, jittered backoff; after 5 in a row the
   target's circuit breaker (``integrations.transport.CircuitBreaker``, one ``ConnectorState``
   row per target) pauses it, reason shown in the admin; when the pause ends one delivery
   probes it, and a success resumes it.
4. The sender is chosen by the target's kind (``senders.SENDERS``): a webhook, or the
   Salesforce core connector.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min
from django.utils import timezone

from customers.models import ChangeEvent
from integrations.downstream.egress import delivery_session
from integrations.downstream.models import Delivery, DownstreamTarget
from integrations.downstream.senders import SENDERS
from integrations.queue import (
    enqueue_once,
    enqueue_wake_up,
    release_lease,
    take_lease,
    task_started,
    wake_up_started,
)
from integrations.transport import CircuitBreaker, TransportError, backoff_delay

logger = logging.getLogger(__name__)

FANOUT_TASK = "integrations.downstream.delivery.fan_out"
DELIVER_TASK = "integrations.downstream.delivery.deliver"
FANOUT_FLAG = "downstream-fan-out"
FANOUT_BATCH = 2000
HEADS_PER_ROUND = 50
ROUND_SECONDS = 20.0  # one task's sending time, well under django-q2's timeout
PAUSE_AFTER_FAILURES = 5
PAUSE_BASE_SECONDS = 10.0  # the first pause; doubles each time the probe fails
PAUSE_MAX_SECONDS = 600.0
# One sender per target (a lease), so a probe is never concurrent with another send; one
# not reported back by then (its worker died) lets the next round probe again.
PROBE_TIMEOUT_SECONDS = 30.0

_HEADS_SQL = """
SELECT id FROM (
    SELECT DISTINCT ON (master_id) id, status, next_attempt_at, change_id
    FROM downstream_delivery
    WHERE target_id = %s AND status IN ('pending', 'dead')
    ORDER BY master_id, change_id
) AS head
WHERE status = 'pending' AND next_attempt_at <= now()
ORDER BY change_id
LIMIT %s
"""


# When the soonest head (ignoring blocked people) comes due.
_NEXT_HEAD_SQL = """
SELECT min(next_attempt_at) FROM (
    SELECT DISTINCT ON (master_id) status, next_attempt_at
    FROM downstream_delivery
    WHERE target_id = %s AND status IN ('pending', 'dead')
    ORDER BY master_id, change_id
) AS head
WHERE status = 'pending'
"""


def target_breaker(target_id: int) -> CircuitBreaker:
    """The breaker that pauses a target after failures in a row (its ``ConnectorState`` ``target:<id>``)."""
    return CircuitBreaker(
        DownstreamTarget.breaker_key(target_id),
        threshold=PAUSE_AFTER_FAILURES,
        cooldown=PAUSE_BASE_SECONDS,
        max_cooldown=PAUSE_MAX_SECONDS,
        probe_timeout=PROBE_TIMEOUT_SECONDS,
    )


def deliver_flag(target_id: int) -> str:
    return f"downstream-deliver-{target_id}"


def enqueue_wake_up_for(target_id: int, delay: float) -> None:
    with transaction.atomic():
        enqueue_wake_up(DELIVER_TASK, target_id, flag=f"{deliver_flag(target_id)}-later", delay=delay)


def queue_fan_out() -> None:
    enqueue_once(FANOUT_TASK, flag=FANOUT_FLAG)


def fan_out() -> str:
    """django-q2 entry point: deliveries for the change events not yet fanned out."""
    task_started(FANOUT_FLAG)
    with transaction.atomic():
        with connection.cursor() as cursor:
            # One fan-out at a time: two could each see half of one person's changes.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended('downstream-fan-out', 0))")
        events = list(
            ChangeEvent.objects.select_for_update()
            .filter(fanned_out=False)
            .order_by("id")
            .values_list("id", "master_id", "change_type")[:FANOUT_BATCH]
        )
        if not events:
            return "nothing to fan out"
        targets = list(DownstreamTarget.objects.filter(enabled=True))
        rows = [
            Delivery(target=t, change_id=pk, master_id=master_id)
            for pk, master_id, change_type in events
            for t in targets
            if t.wants(change_type)
        ]
        Delivery.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        ChangeEvent.objects.filter(pk__in=[e[0] for e in events]).update(fanned_out=True)
        for target in {r.target_id: r.target for r in rows}.values():
            enqueue_once(DELIVER_TASK, target.pk, flag=deliver_flag(target.pk))
        if len(events) == FANOUT_BATCH:
            enqueue_once(FANOUT_TASK, flag=FANOUT_FLAG)
    return f"{len(rows)} deliveries for {len(events)} change(s)"


def sender_lease(target_id: int) -> str:
    return f"downstream-sender-{target_id}"


def deliver(target_id: int) -> str:
    """django-q2 entry point: send the due heads of one target's per-person queues.

    Always through ``delivery_session``: https to checked public addresses, no redirects.
    """
    task_started(deliver_flag(target_id))
    wake_up_started(f"{deliver_flag(target_id)}-later")
    # One sender per target: a lease (a row), held past the task's timeout so it cannot end while
    # its holder still sends; a holder that died leaves it to run out, then the next round takes it.
    token = take_lease(sender_lease(target_id), seconds=settings.RESOLVER_LEASE)
    if token is None:
        return "another sender is busy with this target"
    try:
        return _deliver(target_id, delivery_session())
    finally:
        release_lease(sender_lease(target_id), token)


def _due_heads(target_id: int) -> list[Delivery]:
    with connection.cursor() as cursor:
        cursor.execute(_HEADS_SQL, [target_id, HEADS_PER_ROUND])
        head_ids = [row[0] for row in cursor.fetchall()]
    return list(Delivery.objects.select_related("change").filter(pk__in=head_ids).order_by("change_id"))


def _deliver(target_id: int, session: requests.Session) -> str:
    target = DownstreamTarget.objects.filter(pk=target_id).first()
    if target is None or not target.enabled:
        return "target gone or disabled"
    heads = _due_heads(target_id)
    if not heads:
        _schedule_next(target, None)
        return "0 delivered, 0 failed"
    # Asked only with a delivery at hand: a breaker that lets a probe through gets one at once.
    breaker = target_breaker(target_id)
    gate = breaker.check()
    if not gate.allowed:
        enqueue_wake_up_for(target_id, gate.wait)
        return f"paused: {gate.reason}"
    sent = failed = 0
    deadline = time.monotonic() + ROUND_SECONDS
    held_until: dt.datetime | None = None
    while heads and held_until is None:
        for delivery in heads:
            ok, held_until = _send_one(target, breaker, delivery, session)
            sent += ok
            failed += not ok
            if held_until is not None:
                logger.warning("downstream target %s paused until %s", target.pk, held_until.isoformat())
                break
        heads = _due_heads(target_id) if time.monotonic() < deadline and held_until is None else []
    _schedule_next(target, held_until)
    return f"{sent} delivered, {failed} failed" + (" (target paused)" if held_until else "")


def _send_one(
    target: DownstreamTarget, breaker: CircuitBreaker, delivery: Delivery, session: requests.Session
) -> tuple[bool, dt.datetime | None]:
    """Send one delivery and record its outcome: whether it was delivered, and until when the
    target's breaker now holds sends (None while it lets them through)."""
    delivery.attempts += 1
    try:
        answer = SENDERS[target.kind](target, delivery, session)
    except TransportError as exc:
        # Our own words, the status and the answer's size: never the answer's body.
        delivery.last_status_code = exc.http_status
        delivery.last_response_bytes = exc.response_bytes
        delivery.last_error = exc.message[:2000]
        if exc.permanent or delivery.attempts >= settings.DOWNSTREAM_MAX_ATTEMPTS:
            delivery.status = Delivery.DEAD
            logger.warning(
                "delivery %s to target %s dead-lettered (status %s)", delivery.pk, target.pk, exc.http_status
            )
        else:
            delay = backoff_delay(delivery.attempts, base=1.0, cap=300.0, floor=exc.retry_after or 0.0)
            delivery.next_attempt_at = timezone.now() + dt.timedelta(seconds=delay)
        delivery.save(
            update_fields=[
                "attempts",
                "status",
                "next_attempt_at",
                "last_status_code",
                "last_response_bytes",
                "last_error",
            ]
        )
        # A permanent failure is about this delivery, not an outage: noted, not counted.
        state = breaker.record_failure(exc.message, trips_breaker=not exc.permanent)
        return False, state.open_until if state.breaker_state == state.OPEN else None
    delivery.status = Delivery.DELIVERED
    delivery.delivered_at = timezone.now()
    delivery.last_status_code = answer.status
    delivery.last_response_bytes = answer.size
    delivery.last_error = ""
    delivery.save(
        update_fields=["attempts", "status", "delivered_at", "last_status_code", "last_response_bytes", "last_error"]
    )
    breaker.record_success()
    return True, None


def _schedule_next(target: DownstreamTarget, held_until: dt.datetime | None) -> None:
    now = timezone.now()
    if held_until and held_until > now:
        enqueue_wake_up_for(target.pk, (held_until - now).total_seconds())
        return
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_HEAD_SQL, [target.pk])
        soonest = cursor.fetchone()[0]
    if soonest is None:
        return  # nothing pending, or only people held behind a dead-lettered change
    with transaction.atomic():
        if soonest <= now:
            enqueue_once(DELIVER_TASK, target.pk, flag=deliver_flag(target.pk))
        else:
            enqueue_wake_up_for(target.pk, (soonest - now).total_seconds())


def resume(target_id: int) -> None:
    """Lift a target's pause now (*Resume now* in the admin) and send what is due."""
    with transaction.atomic():  # the pause lifts and the delivery run is queued together, or neither
        target_breaker(target_id).close()
        enqueue_once(DELIVER_TASK, target_id, flag=deliver_flag(target_id))


def replay(delivery: Delivery) -> None:
    """A dead-lettered delivery goes back to its person's queue, at its place in the order."""
    Delivery.objects.filter(pk=delivery.pk, status=Delivery.DEAD).update(
        status=Delivery.PENDING, attempts=0, next_attempt_at=timezone.now(), last_error=""
    )
    with transaction.atomic():
        enqueue_once(DELIVER_TASK, delivery.target_id, flag=deliver_flag(delivery.target_id))


def target_lag_seconds(target: DownstreamTarget) -> float | None:
    oldest = Delivery.objects.filter(target=target, status__in=[Delivery.PENDING, Delivery.DEAD]).aggregate(
        m=Min("change__created_at")
    )["m"]
    return (timezone.now() - oldest).total_seconds() if oldest else None


def status_counts(target: DownstreamTarget) -> dict[str, Any]:
    return dict(Delivery.objects.filter(target=target).values_list("status").annotate(n=Count("id")))
