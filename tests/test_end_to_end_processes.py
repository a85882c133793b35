"""The whole flow with the real processes: gunicorn, the django-q2 cluster, the sandbox."""

from __future__ import annotations

import random

import pytest
import requests

from customers.models import CrossReference, Individual, MatchCandidate
from integrations.choices import EventStatus
from integrations.models import InboundEvent
from sandboxes.marketing_cloud.journey import DEMO_SUBSCRIBERS, send_demo, send_execute
from tests.conftest import CLIENT_ID, CLIENT_SECRET, JWT_SECRET, subscriber
from tests.processes import HubProcesses, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hub(sandbox):
    processes = HubProcesses(
        {
            "MC_AUTH_BASE_URL": sandbox.url,
            "MC_CLIENT_ID": CLIENT_ID,
            "MC_CLIENT_SECRET": CLIENT_SECRET,
            "MC_JWT_SECRET": JWT_SECRET,
            "MC_HTTP_TIMEOUT": "2",
        }
    )
    try:
        processes.start_web()
        processes.start_cluster()
        yield processes
    finally:
        processes.stop()


def _all_synced() -> bool:
    statuses = set(InboundEvent.objects.values_list("status", flat=True))
    return bool(statuses) and statuses <= {EventStatus.SYNCED}


def test_demo_subscribers_become_golden_records_written_back(hub, sandbox):
    execute_url = f"{hub.url}/api/v1/marketing-cloud/journey/execute"
    responses = send_demo(execute_url, JWT_SECRET)
    assert [r.status_code for r in responses] == [200] * len(DEMO_SUBSCRIBERS)
    assert wait_until(_all_synced, timeout=60), list(InboundEvent.objects.values_list("status", "reason"))

    keys = {s["SubscriberKey"] for s in DEMO_SUBSCRIBERS}
    rows = sandbox.rows("Individual")
    assert keys <= set(rows)
    for xref in CrossReference.objects.select_related("individual"):
        assert rows[xref.external_id]["GlobalPartyId"] == xref.individual.master_id
    # Sofia Marquez twice (one email, two spellings) and Ava Thompson twice (a typo, one phone) are one
    # person each; Mia O'Connor, on her brother's mailbox, is her own person, queued for review.
    assert Individual.objects.count() == len(keys) - 2
    ava = CrossReference.objects.get(external_id="SK-DEMO-0007")
    assert ava.individual_id == CrossReference.objects.get(external_id="SK-DEMO-0002").individual_id
    assert ava.match_rule == "Same phone, same name"
    assert MatchCandidate.objects.filter(status="open", rule="Shared mailbox").count() == 1


def test_throttling_and_server_errors_through_the_real_cluster(hub, sandbox):
    sandbox.inject("429", retry_after=1)
    sandbox.inject("500")
    response = send_execute(f"{hub.url}/api/v1/marketing-cloud/journey/execute", subscriber(), JWT_SECRET)
    assert response.status_code == 200
    assert wait_until(_all_synced, timeout=60)
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == Individual.objects.get().master_id
    assert sandbox.count("PUT", "/hub/v1/dataevents") == 3


def test_two_clusters_on_one_database_resolve_one_backlog_without_a_duplicate(sandbox, api_key, tmp_path):
    """Two qcluster processes (two hosts, as far as the database can tell) share the event backlog."""
    # One worker each, small batches: while one cluster's worker resolves a full batch, the
    # wake-up it queues for the rest can only be taken by the other cluster.
    env = {"MC_AUTH_BASE_URL": sandbox.url, "HUB_RESOLVER_BATCH": "5", "HUB_Q_WORKERS": "1"}
    first, second = HubProcesses(env), HubProcesses(env)
    rng = random.Random(11)
    events = []
    for p in range(150):
        phone = f"+1 312 555 {p:04d}"
        for system, name in (("POS", "William"), ("B2C_COMMERCE", "Bill"), ("SALESFORCE", "Will")):
            points = [
                {"contactPointType": "ContactPointEmail", "emailAddress": f"{system.lower()}{p}@example.com"},
                {"contactPointType": "ContactPointPhone", "telephoneNumber": phone},
            ]
            individual = {"id": f"{system}-{p}", "firstName": name, "lastName": f"Reyes{p}", "contactPoints": points}
            events.append(
                {"id": f"e-{system}-{p}", "source": system, "occurredAt": "2026-11-20T10:00:00Z"}
                | {"individual": individual}
            )
    rng.shuffle(events)
    try:
        first.start_web()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {api_key}"
        for i in range(0, len(events), 50):
            assert session.post(f"{first.url}/api/v1/events", json={"events": events[i : i + 50]}, timeout=30).ok
        first.start_cluster(log_path=tmp_path / "first.log")
        second.start_cluster(log_path=tmp_path / "second.log")
        assert wait_until(_all_synced, timeout=180), list(InboundEvent.objects.values_list("status", "reason")[:5])
    finally:
        first.stop()
        second.stop()
    assert Individual.objects.count() == 150
    owners = dict(CrossReference.objects.values_list("external_id", "individual_id"))
    for p in range(150):
        assert owners[f"POS-{p}"] == owners[f"B2C_COMMERCE-{p}"] == owners[f"SALESFORCE-{p}"]
    for log in ("first.log", "second.log"):  # both clusters took part
        assert b"integrations.resolver.resolve_ready_events" in (tmp_path / log).read_bytes(), log
