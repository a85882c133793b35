"""Golden-record changes published to downstream systems: outbox, signed, in order per person, retried."""

from __future__ import annotations

import pytest

from customers.models import ChangeEvent, Individual
from integrations.downstream.delivery import deliver, fan_out, replay, target_lag_seconds
from integrations.downstream.models import Delivery, DownstreamTarget
from tests.conftest import subscriber
from tests.queue import run_queued
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver():
    secret = DownstreamTarget._meta.get_field("secret").get_default()
    with WebhookReceiver(secret) as server:
        yield server


@pytest.fixture
def target(receiver):
    return DownstreamTarget.objects.create(name="crm", url=receiver.url, secret=receiver.secret)


def change_ids(master_id: str) -> list[int]:
    return list(ChangeEvent.objects.filter(master_id=master_id).order_by("id").values_list("id", flat=True))


def test_every_change_is_written_with_it_and_delivered_signed(journey, sandbox, target, receiver):
    journey.execute(subscriber())
    run_queued()
    individual = Individual.objects.get()
    [change] = ChangeEvent.objects.all()
    assert change.change_type == "created" and change.snapshot["id"] == individual.master_id
    [message] = receiver.received
    assert receiver.bad_signatures == 0
    assert message["id"] == f"msg_{change.pk}" and message["type"] == "customer.created"
    assert message["data"]["individual"]["firstName"] == "Ada"
    assert message["data"]["change"]["linked"] == {"system": "MARKETING_CLOUD", "externalId": "SK-1001"}
    assert Delivery.objects.get().status == "delivered"
    run = individual.master_id and change.change["syncRunId"]
    from integrations.models import SyncRun

    step = SyncRun.objects.get(pk=run).steps.get(name="notify downstream systems")
    assert step.outcome == "ok" and "queued for 1 target" in step.detail


def test_retries_keep_the_webhook_id_and_the_order_per_person(journey, sandbox, target, receiver):
    receiver.fail_next = 2
    for day in (1, 2, 3):
        journey.execute(subscriber(FirstName=f"V{day}", ModifiedDate=f"2026-11-0{day}T00:00:00Z"))
        run_queued()
    master_id = Individual.objects.get().master_id
    assert receiver.changes_for(master_id) == change_ids(master_id)
    first = f"msg_{change_ids(master_id)[0]}"
    assert receiver.attempts[:3] == [first, first, first]
    assert [m["data"]["individual"]["firstName"] for m in receiver.received] == ["V1", "V2", "V3"]


def test_one_stuck_person_does_not_hold_up_others(journey, sandbox, target, receiver):
    journey.execute(subscriber(key="A", email="a@example.com"))
    run_queued(limit=1)  # process A only
    master_a = Individual.objects.get().master_id
    receiver.fail_for.add(master_a)
    journey.execute(subscriber(key="B", email="b@example.com", FirstName="Bea"))
    run_queued()
    master_b = Individual.objects.exclude(master_id=master_a).get().master_id
    assert receiver.changes_for(master_b) == change_ids(master_b)
    dead = Delivery.objects.get(master_id=master_a)
    assert dead.status == "dead" and dead.last_status_code == 400

    # A's later change waits behind its dead-lettered first one; replay sends both, in order.
    journey.execute(subscriber(key="A", email="a@example.com", FirstName="Later", ModifiedDate="2026-11-09T00:00:00Z"))
    run_queued()
    assert receiver.changes_for(master_a) == []
    receiver.fail_for.clear()
    replay(dead)
    run_queued()
    assert receiver.changes_for(master_a) == change_ids(master_a)


def test_a_target_that_keeps_failing_is_paused_and_resumes_by_itself(journey, sandbox, target, receiver):
    receiver.fail_next = 1000
    for i in range(6):
        journey.execute(subscriber(key=f"K{i}", email=f"k{i}@example.com"))
    run_queued(include_delayed=False)
    target.refresh_from_db()
    assert target.paused_until is not None and "failures in a row" in target.pause_reason
    assert target_lag_seconds(target) is not None
    receiver.fail_next = 0  # it answers again
    run_queued()
    target.refresh_from_db()
    assert target.paused_until is None and target.consecutive_failures == 0
    assert Delivery.objects.filter(status="delivered").count() == 6
    assert target_lag_seconds(target) is None
    for individual in Individual.objects.all():
        assert receiver.changes_for(individual.master_id) == change_ids(individual.master_id)


def test_event_type_filter_and_disabled_targets(journey, sandbox, target, receiver):
    target.event_types = ["consent"]
    target.save()
    DownstreamTarget.objects.create(name="off", url=receiver.url, enabled=False)
    journey.execute(subscriber())
    run_queued()
    assert receiver.received == [] and Delivery.objects.count() == 0


def test_consent_and_resync_are_published(journey, sandbox, target, receiver, admin_client):
    from django.db import transaction
    from django.utils import timezone

    from customers.stewardship import OptOut, record_opt_outs

    journey.execute(subscriber())
    run_queued()
    individual = Individual.objects.get()
    with transaction.atomic():
        record_opt_outs([OptOut(individual.pk, timezone.now(), "TEST", "test")])
    admin_client.post("/admin/customers/individual/", {"action": "resync", "_selected_action": [individual.pk]})
    run_queued()
    assert [m["type"] for m in receiver.received] == ["customer.created", "customer.consent", "customer.resync"]
    page = admin_client.get("/admin/downstream/downstreamtarget/").content.decode()
    assert "3 delivered" in page


def test_no_targets_means_no_fan_out_work(journey, sandbox):
    journey.execute(subscriber())
    run_queued()
    assert ChangeEvent.objects.count() == 1 and Delivery.objects.count() == 0
    # Nothing queued a fan-out; one run by hand marks the change fanned out to no target.
    assert fan_out() == "0 deliveries for 1 change(s)"
    assert fan_out() == "nothing to fan out" and Delivery.objects.count() == 0
    assert deliver(12345) == "target gone or disabled"
