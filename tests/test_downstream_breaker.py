"""A downstream target's pause is the one circuit breaker: its ConnectorState row ``target:<id>``."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from integrations.downstream.delivery import deliver, target_breaker
from integrations.downstream.models import DownstreamTarget
from integrations.models import AccessToken, ConnectorState
from tests.conftest import subscriber
from tests.queue import fast_forward, run_queued
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver():
    secret = DownstreamTarget._meta.get_field("secret").get_default()
    with WebhookReceiver(secret) as server:
        yield server


def test_a_failing_target_opens_its_breaker_shown_with_the_others_and_a_failed_probe_doubles_the_pause(
    journey, sandbox, receiver, admin_client
):
    target = DownstreamTarget.objects.create(name="crm", url=receiver.url, secret=receiver.secret)
    receiver.fail_next = 1000
    for i in range(6):
        journey.execute(subscriber(key=f"K{i}", email=f"k{i}@example.com"))
    run_queued(include_delayed=False)
    state = ConnectorState.objects.get(system=f"target:{target.pk}")
    assert state.breaker_state == ConnectorState.OPEN and state.consecutive_failures == 5
    assert (state.open_until - state.opened_at).total_seconds() == 10
    assert target.paused_until == state.open_until and target.pause_reason.startswith("5 failures in a row; last: ")
    assert f"target:{target.pk}" in admin_client.get(reverse("admin-dashboard")).content.decode()

    fast_forward(dt.timedelta(seconds=11))
    assert deliver(target.pk).endswith("(target paused)")  # the probe failed
    state.refresh_from_db()
    assert state.breaker_state == ConnectorState.OPEN and state.times_opened == 2
    assert (state.open_until - state.opened_at).total_seconds() == 20
    assert len(receiver.attempts) == 6  # five, then the one probe

    receiver.fail_next = 0  # it answers again; a steward resumes it before the pause ends
    admin_client.post(
        reverse("admin:downstream_downstreamtarget_changelist"), {"action": "resume", "_selected_action": [target.pk]}
    )
    assert target_breaker(target.pk).check().allowed
    run_queued()
    state.refresh_from_db()
    assert state.breaker_state == ConnectorState.CLOSED and state.consecutive_failures == 0
    assert len(receiver.received) == 6


def test_deleting_a_target_forgets_its_breaker_and_its_salesforce_token():
    target = DownstreamTarget.objects.create(name="crm", url="https://93.184.216.34/hooks")
    other = DownstreamTarget.objects.create(name="other", url="https://93.184.216.35/hooks")
    for each in (target, other):
        target_breaker(each.pk).record_failure("the endpoint answered 503 (0 bytes)")
        AccessToken.objects.create(system=f"SALESFORCE:{each.pk}", access_token="t", expires_at=timezone.now())
    target.delete()
    assert list(ConnectorState.objects.values_list("system", flat=True)) == [f"target:{other.pk}"]
    assert list(AccessToken.objects.values_list("system", flat=True)) == [f"SALESFORCE:{other.pk}"]


BEFORE = [("downstream", "0002_delivery_answer_size_target_url_checks")]
AFTER = [("downstream", "0003_target_health_in_connector_state")]


def _migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection)  # a fresh graph for what follows


def test_the_upgrade_keeps_paused_targets_paused_and_can_be_undone():
    executor = _migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps.get_model("downstream", "DownstreamTarget")
        until = timezone.now().replace(microsecond=0) + dt.timedelta(seconds=40)
        paused = old.objects.create(
            name="paused",
            url="https://93.184.216.34/a",
            paused_until=until,
            pause_reason="7 failures in a row; last: the endpoint answered 503 (0 bytes)",
            consecutive_failures=7,
            last_error="the endpoint answered 503 (0 bytes)",
        )
        succeeded = timezone.now().replace(microsecond=0)
        healthy = old.objects.create(name="healthy", url="https://93.184.216.35/a", last_success_at=succeeded)
        old.objects.create(name="new", url="https://93.184.216.36/a")

        _migrate(AFTER)
        assert set(ConnectorState.objects.values_list("system", flat=True)) == {
            f"target:{paused.pk}",
            f"target:{healthy.pk}",
        }
        state = ConnectorState.objects.get(system=f"target:{paused.pk}")
        assert (state.breaker_state, state.open_until, state.consecutive_failures) == ("open", until, 7)
        target = DownstreamTarget.objects.get(pk=paused.pk)
        assert target.paused_until == until and target.pause_reason.startswith("7 failures in a row")
        assert DownstreamTarget.objects.get(pk=healthy.pk).last_success_at == succeeded
        # The next pause lasts what it would have before the upgrade: 10 s * 2 ** (8 - 5).
        ConnectorState.objects.filter(pk=state.pk).update(open_until=timezone.now())
        breaker = target_breaker(paused.pk)
        assert breaker.check().probe
        state = breaker.record_failure("the endpoint answered 503 (0 bytes)")
        assert (state.open_until - state.opened_at).total_seconds() == 80

        executor = _migrate(BEFORE)
        old = executor.loader.project_state(BEFORE).apps.get_model("downstream", "DownstreamTarget")
        back = old.objects.get(pk=paused.pk)
        assert back.paused_until == state.open_until and back.consecutive_failures == 8
        assert back.pause_reason.startswith("8 failures in a row")
        assert old.objects.get(pk=healthy.pk).last_success_at == succeeded
        assert not ConnectorState.objects.filter(system__startswith="target:").exists()
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
