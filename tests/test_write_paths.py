"""Writes go where the code says they go.

Golden-record changes through the unit of work (``customers.resolution.store``) and the steward's
actions (``customers.stewardship``); queued work committed with the state that asks for it
(``integrations.queue.enqueue_once``); refusals as problem details; a step log that reports what the
fan-out will do.
"""

from __future__ import annotations

import pytest
import requests
from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from customers.models import CrossReference, HistoryEntry, Individual
from customers.stewardship import erase_individual, merge_individuals
from integrations import queue
from integrations.downstream.models import DownstreamTarget
from integrations.marketing_cloud import writeback_outcomes
from integrations.models import ApiClient, ConnectorState, QueuedFlag, SyncRun, SyncStep
from tests.test_mdm import cim, ingest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def steward(client):
    client.force_login(get_user_model().objects.create_superuser("lead", "", "pw-for-tests"))
    return client


def test_a_merge_repoints_older_redirects_through_the_unit_of_work(sandbox):
    oldest = ingest("POS", "p-1", cim("Ann", "Lee", email="ann@example.com"))
    middle = ingest("ERP", "e-1", cim("Zoe", "Park", email="zoe@example.com"))
    youngest = ingest("WEB", "w-1", cim("Max", "Ode", email="max@example.com"))
    merge_individuals(middle, youngest, actor="test")  # the older master ID survives
    youngest.refresh_from_db()
    assert youngest.merged_into_id == middle.pk
    redirected_at = youngest.updated_at
    survivor = merge_individuals(oldest, middle, actor="test")
    youngest.refresh_from_db()
    middle.refresh_from_db()
    # Every retired ID resolves in one hop, and the redirected record was written as every golden
    # record is: its version moved, so a writer that loaded it before finds it changed.
    assert survivor.pk == oldest.pk and middle.merged_into_id == oldest.pk and youngest.merged_into_id == oldest.pk
    assert youngest.updated_at > redirected_at


def test_an_erased_records_source_cannot_be_made_valid_again(steward, sandbox):
    golden = ingest("POS", "p-1", cim("Ann", "Lee", email="ann@example.com"))
    with transaction.atomic():
        erase_individual(golden, actor="test")
    xref = CrossReference.objects.get(system="POS", external_id="p-1")
    assert xref.status == "INVALID"
    response = steward.post(
        reverse("admin:customers_crossreference_change", args=[xref.pk]), {"status": "VALID"}, follow=True
    )
    assert response.status_code == 200
    assert "merged or erased golden records cannot be changed" in [str(m) for m in response.context["messages"]]
    xref.refresh_from_db()
    assert xref.status == "INVALID"
    assert not HistoryEntry.objects.filter(object_type="CrossReference", actor="user:lead").exists()


class QueueDown(Exception):
    pass


def _refuse(*args, **kwargs):
    raise QueueDown


@pytest.fixture
def queue_down(monkeypatch):
    monkeypatch.setattr(queue, "enqueue", _refuse)


def test_resuming_a_target_commits_with_its_queued_delivery_or_not_at_all(steward, queue_down):
    target = DownstreamTarget.objects.create(name="crm", url="https://crm.example.com/hook")
    ConnectorState.objects.create(
        system=DownstreamTarget.breaker_key(target.pk),
        paused_until=timezone.now() + timezone.timedelta(minutes=5),
        pause_reason="5 failures in a row",
        consecutive_failures=5,
    )
    url = reverse("admin:downstream_downstreamtarget_changelist")
    with pytest.raises(QueueDown):
        steward.post(url, {"action": "resume", "_selected_action": [target.pk]})
    target.refresh_from_db()
    # Nothing half-done: still paused, and no flag left saying a delivery run is queued.
    assert target.paused_until is not None and target.consecutive_failures == 5
    assert not QueuedFlag.objects.filter(queued=True).exists()


def test_closing_a_breaker_commits_with_its_queued_flush_or_not_at_all(steward, queue_down):
    state = ConnectorState.objects.create(
        system="MARKETING_CLOUD", breaker_state=ConnectorState.OPEN, consecutive_failures=5
    )
    url = reverse("admin:integrations_connectorstate_changelist")
    with pytest.raises(QueueDown):
        steward.post(url, {"action": "close_breaker", "_selected_action": [state.pk]})
    state.refresh_from_db()
    assert state.breaker_state == ConnectorState.OPEN
    assert not QueuedFlag.objects.filter(queued=True).exists()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/marketing-cloud/journey/resume", b"x"),  # not a lifecycle action
        ("/api/v1/marketing-cloud/journey/save", b"x" * (256 * 1024 + 1)),  # over the body limit
    ],
)
def test_the_activitys_refusals_are_problem_details(client, path, body):
    response = client.post(path, data=body, content_type="application/jwt")
    assert response.status_code in (404, 413)
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == response.status_code and problem["type"] == "about:blank" and problem["detail"]


def test_a_scope_refusal_names_the_missing_scope(live_server):
    _, key = ApiClient.issue("reader", ["read"])
    response = requests.post(
        f"{live_server.url}/api/v1/events", json={"events": []}, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == "This API key lacks the ingest scope."


def test_the_step_log_counts_only_the_targets_that_want_the_change(sandbox):
    DownstreamTarget.objects.create(name="erasures only", url="https://crm.example.com/hook", event_types=["erased"])
    golden = ingest("POS", "p-1", cim("Ann", "Lee", email="ann@example.com"))
    run = SyncRun.objects.filter(master_id=golden.master_id).get()
    step = SyncStep.objects.get(run=run, name="notify downstream systems")
    assert step.outcome == "skipped" and "no enabled target wants created" in step.detail
    assert step.data["targets"] == 0
    assert Individual.objects.count() == 1


def test_the_next_write_back_flush_is_queued_with_its_flag_or_not_at_all(sandbox, monkeypatch):
    golden = ingest("POS", "p-1", cim("Ann", "Lee", email="ann@example.com"))
    monkeypatch.setattr(queue, "enqueue", _refuse)
    xref = CrossReference.objects.get(individual=golden)
    CrossReference.objects.filter(pk=xref.pk).update(
        system="MARKETING_CLOUD", writeback_state="pending", writeback_due_at=timezone.now()
    )
    QueuedFlag.objects.all().update(queued=False)
    with pytest.raises(QueueDown):
        writeback_outcomes.queue_next_flush()
    assert not QueuedFlag.objects.filter(queued=True).exists()
