"""Leases (``integrations.queue.take_lease``): rows, not session-level advisory locks, so they hold behind
PgBouncer in transaction mode; one holder at a time, given back by its holder only, free again when it ends."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from integrations.downstream.delivery import deliver, sender_lease
from integrations.models import QueuedFlag
from integrations.queue import release_lease, take_lease

pytestmark = pytest.mark.django_db


def test_one_holder_at_a_time_and_only_the_holder_gives_it_back():
    first = take_lease("work", seconds=60)
    assert first and take_lease("work", seconds=60) is None
    release_lease("work", "someone-else")
    assert take_lease("work", seconds=60) is None
    release_lease("work", first)
    second = take_lease("work", seconds=60)
    assert second and second != first


def test_a_lease_whose_holder_died_is_free_once_it_ends():
    assert take_lease("work", seconds=60)
    QueuedFlag.objects.filter(name="work").update(held_until=timezone.now() - dt.timedelta(hours=1))
    assert take_lease("work", seconds=60)


def test_a_downstream_round_waits_for_the_sender_holding_the_target():
    holder = take_lease(sender_lease(41), seconds=60)
    assert deliver(41) == "another sender is busy with this target"
    release_lease(sender_lease(41), holder)
    assert deliver(41) == "target gone or disabled"  # it ran: nobody held the target
