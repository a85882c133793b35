"""The reconciliation poller reads the data extension and catches what no journey call brought."""

from __future__ import annotations

import pytest
from django_q.models import Schedule

from customers.models import CrossReference, Individual
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.models import ReconciliationState
from integrations.marketing_cloud.poller import POLL_TASK, SCHEDULE_NAME, poll_data_extension
from integrations.models import InboundEvent
from tests.conftest import subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db(transaction=True)


def seed(n: int, *, modified: str = "2026-11-10T08:00:00", start: int = 0) -> None:
    client = MarketingCloudClient.from_settings()
    for i in range(start, start + n):
        values = {
            "EmailAddress": f"row{i}@example.com",
            "FirstName": "Row",
            "LastName": f"N{i}",
            "SubscriberId": str(5000 + i),
            "Status": "Active",
            "CreatedDate": "2026-11-01T00:00:00",
            "ModifiedDate": modified,
        }
        client.upsert_row("Individual", "SubscriberKey", f"ROW-{i:04d}", values)


@pytest.fixture
def small_pages(sandbox):
    ReconciliationState.objects.create(de_key="Individual", page_size=50)


def test_schedule_is_seeded():
    schedule = Schedule.objects.get(name=SCHEDULE_NAME)
    assert schedule.func == POLL_TASK and schedule.minutes == 15 and schedule.repeats == -1


def test_every_page_is_read_and_unseen_subscribers_become_golden_records(small_pages, sandbox):
    seed(120)
    assert poll_data_extension() == "120 rows in 3 page(s), 120 sent"
    state = ReconciliationState.objects.get()
    assert state.last_status == "succeeded" and state.last_pages_read == 3
    assert state.watermark.isoformat().startswith("2026-11-10T08:00:00")
    assert InboundEvent.objects.filter(channel="mc_poller").count() == 120
    run_queued()
    assert Individual.objects.count() == 120
    rows = sandbox.rows("Individual")
    for xref in CrossReference.objects.select_related("individual"):
        assert rows[xref.external_id]["GlobalPartyId"] == xref.individual.master_id


def test_a_second_run_sends_only_changes(small_pages, sandbox):
    from urllib.parse import unquote

    seed(10)
    poll_data_extension()
    run_queued()
    client = MarketingCloudClient.from_settings()
    paths: list[str] = []
    real_request = client.request
    client.request = lambda method, path, **kw: paths.append(unquote(path)) or real_request(method, path, **kw)
    assert poll_data_extension(client).endswith("0 sent")
    # It asked only for rows changed since the watermark minus the 15-minute overlap, oldest first.
    assert "$filter=ModifiedDate gt '2026-11-10T07:45:00'" in paths[0]
    assert "$orderBy=ModifiedDate asc" in paths[0]
    seed(1, start=3, modified="2026-11-11T09:00:00")
    assert poll_data_extension().endswith("1 sent")
    assert queued_tasks()[0]["func"] == "integrations.resolver.resolve_ready_events"


def test_subscribers_seen_newer_through_the_journey_are_skipped(small_pages, journey, sandbox):
    journey.execute(subscriber(key="ROW-0000", email="row0@example.com", ModifiedDate="2026-11-20T00:00:00Z"))
    run_queued()
    seed(2)
    assert poll_data_extension().endswith("1 sent")


def test_a_failed_page_keeps_the_watermark_and_loses_nothing(small_pages, sandbox):
    seed(120)
    sandbox.inject("500", path_contains="page=2&")
    result = poll_data_extension()
    assert result.startswith("failed")
    state = ReconciliationState.objects.get()
    assert state.last_status == "failed" and state.watermark is None
    assert InboundEvent.objects.count() == 50  # page 1 is stored
    assert poll_data_extension().endswith("70 sent")  # the rerun adds the rest, no duplicates
    assert InboundEvent.objects.count() == 120


def test_bad_rows_are_rejected_not_lost(small_pages, sandbox):
    client = MarketingCloudClient.from_settings()
    client.upsert_row(
        "Individual", "SubscriberKey", "BAD-1", {"EmailAddress": "not-an-email", "ModifiedDate": "2026-11-10T08:00:00"}
    )
    seed(1)
    assert poll_data_extension().endswith("1 sent")
    rejected = InboundEvent.objects.get(status="rejected")
    assert rejected.external_id == "BAD-1" and "row.EmailAddress" in rejected.reason


def test_admin_shows_the_watermark_and_runs_on_demand(small_pages, sandbox, admin_client):
    seed(3)
    poll_data_extension()
    page = admin_client.get("/admin/marketing_cloud/reconciliationstate/")
    assert page.status_code == 200 and "succeeded" in page.content.decode()
    state = ReconciliationState.objects.get()
    response = admin_client.post(
        "/admin/marketing_cloud/reconciliationstate/", {"action": "run_now", "_selected_action": [state.pk]}
    )
    assert response.status_code == 302
    assert POLL_TASK in [t["func"] for t in queued_tasks()]
