"""The reconciliation poller reads the data extension and catches what no journey call brought.

The sandbox answers row reads as a tenant does: dates in Marketing Cloud system time (UTC-6 all
year), 2,500 rows a page, later pages through ``links.next``.
"""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from customers.models import CrossReference, Individual
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.models import ReconciliationState
from integrations.marketing_cloud.poller import POLL_TASK, SCHEDULE_NAME, poll_data_extension
from integrations.models import InboundEvent
from tests.conftest import subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db  # rolled back; the tests that need commits say so


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
    # 8:00 in Marketing Cloud time (UTC-6) is 14:00 UTC.
    assert state.watermark == dt.datetime(2026, 11, 10, 14, 0, tzinfo=dt.UTC)
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


@pytest.mark.django_db(transaction=True)  # live server: its thread sees committed rows only
def test_subscribers_seen_newer_through_the_journey_are_skipped(small_pages, journey, sandbox):
    journey.execute(subscriber(key="ROW-0000", email="row0@example.com", ModifiedDate="2026-11-20T00:00:00Z"))
    run_queued()
    seed(2)
    assert poll_data_extension().endswith("1 sent")


def test_a_failed_page_keeps_the_watermark_and_loses_nothing(small_pages, sandbox):
    seed(120)
    sandbox.inject("500", path_contains="$page=2")
    result = poll_data_extension()
    assert result.startswith("failed")
    state = ReconciliationState.objects.get()
    assert state.last_status == "failed" and state.watermark is None
    assert InboundEvent.objects.count() == 50  # page 1 is stored
    assert poll_data_extension().endswith("70 sent")  # the rerun adds the rest, no duplicates
    assert InboundEvent.objects.count() == 120


def test_bad_rows_are_rejected_not_lost(small_pages, sandbox):
    client = MarketingCloudClient.from_settings()
    # Marketing Cloud takes any text as a status; the hub knows only the subscriber statuses.
    client.upsert_row(
        "Individual",
        "SubscriberKey",
        "BAD-1",
        {"EmailAddress": "bad@example.com", "Status": "Sleeping", "ModifiedDate": "2026-11-10T08:00:00"},
    )
    seed(1)
    assert poll_data_extension().endswith("1 sent")
    rejected = InboundEvent.objects.get(status="rejected")
    assert rejected.external_id == "BAD-1" and "row.Status" in rejected.reason


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


MC_TIME = dt.timezone(dt.timedelta(hours=-6))  # stated independently of the code under test


def mc_now(delta: dt.timedelta = dt.timedelta()) -> str:
    """Marketing Cloud's clock as a SQL activity's GETDATE() writes it (no offset, UTC-6)."""
    return (timezone.now() + delta).astimezone(MC_TIME).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.mark.django_db(transaction=True)  # live server: its thread sees committed rows only
def test_a_row_changed_a_minute_ago_in_marketing_cloud_time_is_picked_up(small_pages, journey, sandbox):
    # The hub saw this subscriber five minutes ago through the journey (an instant in UTC).
    seen = (timezone.now() - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    journey.execute(subscriber(key="ROW-0001", email="row1@example.com", ModifiedDate=seen))
    run_queued()
    # A previous run left the watermark ten minutes back.
    ReconciliationState.objects.update(watermark=timezone.now() - dt.timedelta(minutes=10))
    # One minute ago, in Marketing Cloud, an automation changed the row.
    MarketingCloudClient.from_settings().upsert_row(
        "Individual",
        "SubscriberKey",
        "ROW-0001",
        {"EmailAddress": "row1@example.com", "LastName": "Changed", "ModifiedDate": mc_now(-dt.timedelta(minutes=1))},
    )
    assert poll_data_extension().endswith("1 sent")
    event = InboundEvent.objects.filter(channel="mc_poller").get()
    assert abs((timezone.now() - dt.timedelta(minutes=1)) - event.occurred_at) < dt.timedelta(seconds=10)
    run_queued()
    assert Individual.objects.get().last_name == "Changed"


def test_nothing_is_missed_across_a_page_boundary(sandbox):
    client = MarketingCloudClient.from_settings()
    start = dt.datetime(2026, 11, 10, 8, 0, tzinfo=MC_TIME)
    keys = [f"ROW-{i:04d}" for i in range(2501)]
    for first in range(0, len(keys), 50):
        client.upsert_rowset(
            "Individual",
            [
                {
                    "keys": {"SubscriberKey": key},
                    "values": {
                        "EmailAddress": f"{key.lower()}@example.com",
                        "ModifiedDate": (start + dt.timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S"),
                    },
                }
                for n, key in enumerate(keys[first : first + 50], start=first)
            ],
        )
    reading = MarketingCloudClient.from_settings()
    real_request = reading.request
    pages: list[str] = []

    def request_and_change_a_row_after_page_one(method, path, **kwargs):
        answer = real_request(method, path, **kwargs)
        pages.append(path)
        if len(pages) == 1:
            # While the run pages on, the first row changes: in ModifiedDate order it moves last.
            client.upsert_row("Individual", "SubscriberKey", "ROW-0000", {"ModifiedDate": "2026-11-10T09:00:00"})
        return answer

    reading.request = request_and_change_a_row_after_page_one
    assert poll_data_extension(reading) == "2501 rows in 2 page(s), 2501 sent"
    assert "/customobjectdata/token/" in pages[1]
    assert set(InboundEvent.objects.values_list("external_id", flat=True)) == set(keys)
    # The change made during the run is read by the next one.
    assert poll_data_extension().endswith(" 1 sent")


def test_mc_reconcile_runs_now_and_says_what_it_read_and_sent(small_pages, sandbox):
    seed(3)
    out = io.StringIO()
    call_command("mc_reconcile", stdout=out)
    line = out.getvalue().strip()
    assert line.startswith("Individual: read 3 rows in 1 page(s) changed since the start; sent 3, rejected 0")
    assert "watermark 2026-11-10T14:00:00+00:00 (Marketing Cloud time 2026-11-10T08:00:00)" in line
    out = io.StringIO()
    call_command("mc_reconcile", stdout=out)
    assert (
        "changed since 2026-11-10T13:45:00+00:00 (Marketing Cloud time 2026-11-10T07:45:00); sent 0" in out.getvalue()
    )


def test_mc_reconcile_exits_non_zero_when_the_run_fails(small_pages, sandbox):
    sandbox.inject("403", path_contains="/customobjectdata/")
    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("mc_reconcile", stdout=io.StringIO(), stderr=err)
    assert exit_info.value.code == 1
    assert "reconciliation failed" in err.getvalue()
    assert ReconciliationState.objects.get().last_status == "failed"
