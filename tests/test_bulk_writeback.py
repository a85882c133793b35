"""Bulk write-back: above the threshold, asynchronous upserts over real HTTP against the sandbox.

Each test imports a subscriber export (the real backfill path), which leaves the write-backs
pending, then runs the queue as workers would: the flush submits, the poll maps results back.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import signal

import pytest
from django.db import transaction
from django.db.models import Count
from django.urls import reverse

from customers.models import CrossReference
from customers.writeback_state import request_writeback
from integrations.choices import MARKETING_CLOUD
from integrations.intake import AcceptedEvent, store_events
from integrations.marketing_cloud import bulk_writeback, writeback
from integrations.marketing_cloud.backfill import import_subscribers
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.mapping import subscriber_to_cim
from integrations.marketing_cloud.models import BulkWriteback
from integrations.marketing_cloud.schema import INDIVIDUAL, DataExtensionField, DataExtensionSchema
from integrations.models import DeadLetter
from tests.conftest import CLIENT_ID, CLIENT_SECRET, JWT_SECRET, subscriber
from tests.processes import HubProcesses, wait_until
from tests.queue import fast_forward, run_queued
from tests.test_writeback_batching import process_only

pytestmark = pytest.mark.django_db

ASYNC_ROWS = "/data/v1/async/dataextensions/key:Individual/rows"
ROWSET = "/hub/v1/dataevents/key:Individual/rowset"


def export(tmp_path, n, *, key=lambda i: f"BULK-{i:05d}"):
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["SubscriberKey", "EmailAddress", "FirstName", "LastName"])
        for i in range(n):
            writer.writerow([key(i), f"bulk{i}@example.com", "Bulk", f"Person{i}"])
    return path


@pytest.fixture
def bulk(settings, monkeypatch, sandbox):
    """Bulk from 100 due write-backs, at most 120 rows a request (so 360 take three)."""
    settings.MC_ASYNC_WRITEBACK_THRESHOLD = 100
    monkeypatch.setattr(bulk_writeback, "MAX_ROWS", 120)
    monkeypatch.setattr(writeback, "STARVED_AFTER", 3600.0)
    return sandbox


def imported(tmp_path, n, **kwargs):
    job = import_subscribers(export(tmp_path, n, **kwargs), batch_size=100)
    assert job.rows_done == n
    return job


def assert_all_written(sandbox):
    rows = sandbox.rows("Individual")
    for xref in CrossReference.objects.select_related("individual"):
        assert xref.writeback_state == "written", (xref.external_id, xref.writeback_error)
        assert rows[xref.external_id]["GlobalPartyId"] == xref.individual.master_id
        assert xref.source_master_id == xref.individual.master_id


def test_a_backfill_above_the_threshold_is_written_back_in_bulk_requests(tmp_path, bulk):
    imported(tmp_path, 360)
    run_queued()
    assert bulk.count("PUT", ASYNC_ROWS) == 3  # 120 rows each
    assert bulk.count("POST", ROWSET) == 0 and bulk.count("PUT", "/hub/v1/dataevents") == 0
    assert bulk.count("GET", "/data/v1/async/") == 3  # one status poll each; all OK, so no results read
    assert_all_written(bulk)
    requests = list(BulkWriteback.objects.order_by("id"))
    assert [r.rows for r in requests] == [120, 120, 120]
    for request in requests:
        assert request.state == "complete" and request.request_status == "Complete" and request.result_status == "OK"
        assert request.rows_written == request.rows and request.request_id and request.polls == 1
        assert request.submitted_at and request.last_polled_at and request.completed_at
        assert request.next_poll_at is None
    assert sorted(x for r in requests for x in r.xref_ids) == sorted(
        CrossReference.objects.values_list("id", flat=True)
    )


def test_below_the_threshold_the_rowset_path_is_unchanged(tmp_path, bulk, settings):
    settings.MC_ASYNC_WRITEBACK_THRESHOLD = 301
    imported(tmp_path, 300)
    run_queued()
    assert bulk.count("POST", ROWSET) == 6
    assert bulk.count("PUT", ASYNC_ROWS) == 0 and not BulkWriteback.objects.exists()
    assert_all_written(bulk)


def test_per_row_errors_map_back_permanent_to_dead_letters_transient_sent_again(tmp_path, bulk):
    # A tenant whose key column is shorter than some keys: those rows fail, permanently.
    bulk.declare(
        DataExtensionSchema(
            "Individual",
            "Individual",
            (DataExtensionField("SubscriberKey", "Text", 10, is_primary_key=True), *INDIVIDUAL.fields[1:]),
        )
    )
    long_keys = {7, 55, 119}
    imported(tmp_path, 120, key=lambda i: f"LONG-KEY-{i:05d}" if i in long_keys else f"K-{i:05d}")
    bulk.configure(async_deadlock_rows=2)  # the first two rows processed lose a deadlock
    run_queued()
    request = BulkWriteback.objects.get()
    assert (request.rows, request.rows_written, request.rows_failed, request.rows_retried) == (120, 115, 3, 2)
    assert request.result_status == "Has Errors"
    failed = CrossReference.objects.filter(writeback_state="failed")
    assert {x.external_id for x in failed} == {f"LONG-KEY-{i:05d}" for i in long_keys}
    for xref in failed:
        assert "exceeds the maximum length of 10" in xref.writeback_error
    # The two deadlocked rows went out again (by then below the threshold: a rowset, or alone) and are written.
    assert bulk.count("POST", ROWSET) + bulk.count("PUT", "/hub/v1/dataevents/") in (1, 2)
    assert bulk.count("PUT", ASYNC_ROWS) == 1
    written = CrossReference.objects.filter(writeback_state="written")
    assert written.count() == 117
    rows = bulk.rows("Individual")
    assert all(rows[x.external_id]["GlobalPartyId"] == x.individual.master_id for x in written)


def test_a_runs_row_refused_in_bulk_is_dead_lettered_with_its_causes(tmp_path, bulk):
    bulk.declare(
        DataExtensionSchema(
            "Individual",
            "Individual",
            (DataExtensionField("SubscriberKey", "Text", 12, is_primary_key=True), *INDIVIDUAL.fields[1:]),
        )
    )
    imported(tmp_path, 110)
    args = subscriber(key="A-KEY-LONGER-THAN-12", email="long@example.com")
    store_events(
        [
            AcceptedEvent(
                channel="mc_journey",
                system=MARKETING_CLOUD,
                external_id=args["SubscriberKey"],
                idempotency_key="long-key",
                raw_body=b"{}",
                headers={},
                content_type="application/jwt",
                payload={},
                individual_cim=subscriber_to_cim(args),
            )
        ]
    )
    process_only()
    run_queued()
    letter = DeadLetter.objects.get(stage="writeback")
    step = letter.run.steps.get(outcome="failed")
    assert step.data["batchSize"] == 111 and "exceeds the maximum length of 12" in step.detail
    assert letter.run.status == "dead" and letter.event.status == "dead"
    assert any("maximum length of 12" in e["message"] for e in letter.error_detail["additionalErrors"])
    assert BulkWriteback.objects.get().rows_failed == 1


def test_results_are_read_page_by_page_when_the_tenant_pages_them_smaller(tmp_path, bulk, settings):
    settings.MC_ASYNC_WRITEBACK_THRESHOLD = 100
    bulk.configure(async_max_results_page=50, async_deadlock_rows=1)  # an error, so results are read
    imported(tmp_path, 120)
    run_queued()
    assert bulk.count("GET", "/data/v1/async/") >= 1 + 3  # the status, then 3 pages of at most 50
    request = BulkWriteback.objects.get()
    assert (request.rows_written, request.rows_retried) == (119, 1)
    assert_all_written(bulk)


def test_a_status_not_found_right_after_submitting_is_waited_for(tmp_path, bulk):
    bulk.configure(async_not_found_polls=2, async_delay=0.0)
    imported(tmp_path, 120)
    run_queued()
    request = BulkWriteback.objects.get()
    assert request.state == "complete" and request.polls == 3
    assert bulk.count("PUT", ASYNC_ROWS) == 1
    assert_all_written(bulk)


def test_a_request_the_tenant_lost_is_released_after_the_grace_and_sent_again(tmp_path, bulk):
    bulk.configure(async_delay=3600.0)  # still pending when it is lost
    imported(tmp_path, 120)
    writeback.flush_writebacks(from_queue=False)
    assert BulkWriteback.objects.get().state == "pending"
    bulk.forget_async_requests()
    bulk.configure(async_delay=0.0)
    fast_forward(bulk_writeback.NOT_FOUND_GRACE + dt.timedelta(minutes=1))
    run_queued()
    lost = BulkWriteback.objects.order_by("id").first()
    assert lost.state == "released" and "no status" in lost.last_error and lost.rows_retried == 120
    # Released with a failed attempt's backoff each, the rows went out again (rowsets, as they fell due).
    assert bulk.count("POST", ROWSET) + bulk.count("PUT", "/hub/v1/dataevents/") >= 3
    assert_all_written(bulk)
    assert set(CrossReference.objects.values_list("writeback_attempts", flat=True)) == {0}


class WorkerDied(BaseException):
    """What a killed worker looks like from inside: nothing after this line runs."""


class DiesAfterSubmitting(MarketingCloudClient):
    def request(self, method, path, *, json=None):
        answer = super().request(method, path, json=json)
        if "/data/v1/async/dataextensions/" in path:
            raise WorkerDied
        return answer


def test_a_worker_dying_between_submit_and_recording_loses_no_row(tmp_path, bulk):
    imported(tmp_path, 120)
    with pytest.raises(WorkerDied):
        writeback.flush_writebacks(DiesAfterSubmitting.from_settings(), from_queue=False)
    request = BulkWriteback.objects.get()
    assert request.state == "submitting" and request.request_id == ""
    # The rows are held: pending, but no flush sends them again while the request may be in flight.
    assert set(CrossReference.objects.values_list("writeback_state", flat=True)) == {"pending"}
    assert writeback.flush_writebacks(from_queue=False) == "nothing due"
    assert bulk.count("PUT", ASYNC_ROWS) == 1 and bulk.count("POST", ROWSET) == 0
    fast_forward(bulk_writeback.stale_submission_after() + dt.timedelta(seconds=1))
    run_queued()
    request.refresh_from_db()
    assert request.state == "released" and request.rows_retried == 120
    # Sent again (an upsert of the same master IDs is harmless), as the rows fell due.
    assert bulk.count("POST", ROWSET) + bulk.count("PUT", "/hub/v1/dataevents/") >= 3
    assert_all_written(bulk)


def test_failing_polls_back_off_and_the_rows_are_sent_once(tmp_path, bulk):
    bulk.inject("500", count=3, path_contains="/status")
    imported(tmp_path, 120)
    writeback.flush_writebacks(from_queue=False)
    delays = []
    for _ in range(3):
        fast_forward(dt.timedelta(seconds=120))
        bulk_writeback.poll_bulk_writebacks(from_queue=False)
        request = BulkWriteback.objects.get()
        delays.append((request.next_poll_at - request.last_polled_at).total_seconds())
        assert request.state == "pending" and "status poll failed" in request.last_error
    assert delays == [2.0, 4.0, 8.0]
    fast_forward(dt.timedelta(seconds=120))
    run_queued()
    assert BulkWriteback.objects.get().state == "complete"
    assert bulk.count("PUT", ASYNC_ROWS) == 1
    assert_all_written(bulk)


def test_a_change_while_in_flight_waits_for_the_request_and_goes_out_after_it(tmp_path, bulk):
    bulk.configure(async_delay=3600.0)
    imported(tmp_path, 120)
    writeback.flush_writebacks(from_queue=False)
    changed = CrossReference.objects.order_by("id").first()
    with transaction.atomic():
        request_writeback([changed.pk])  # the golden record changed: due again, while the request flies
    assert writeback.flush_writebacks(from_queue=False) == "nothing due"
    assert bulk.count("POST", ROWSET) + bulk.count("PUT", "/hub/v1/dataevents") == 0
    bulk.configure(async_delay=0.0)
    bulk.rows("Individual")  # the tenant gets to it now
    fast_forward(dt.timedelta(seconds=120))
    run_queued()
    request = BulkWriteback.objects.get()
    assert (request.rows_written, request.rows_superseded) == (119, 1)
    assert bulk.count("PUT", "/hub/v1/dataevents/key:Individual/rows/") == 1  # then the one row, alone
    assert_all_written(bulk)


def test_a_refused_bulk_request_is_every_rows_outcome(tmp_path, bulk, settings):
    settings.MC_DE_KEY = "NoSuchExtension"
    imported(tmp_path, 120)
    result = writeback.flush_writebacks(from_queue=False)
    assert "refused" in result and "CustomObjectNotFound" in result
    assert BulkWriteback.objects.get().state == "failed"
    assert CrossReference.objects.filter(writeback_state="failed").count() == 120


def test_the_admin_shows_bulk_requests_read_only(tmp_path, bulk, admin_client, django_assert_max_num_queries):
    imported(tmp_path, 120)
    run_queued()
    request = BulkWriteback.objects.get()
    with django_assert_max_num_queries(12):
        page = admin_client.get(reverse("admin:marketing_cloud_bulkwriteback_changelist"))
    html = page.content.decode()
    assert page.status_code == 200 and request.request_id in html and "Complete" in html
    detail = admin_client.get(reverse("admin:marketing_cloud_bulkwriteback_change", args=[request.pk]))
    assert detail.status_code == 200
    assert f"and {request.rows - 20:,} more" in detail.content.decode()
    assert b'name="_save"' not in detail.content
    assert admin_client.get(reverse("admin:marketing_cloud_bulkwriteback_add")).status_code == 403


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # real processes see committed rows only
def test_a_worker_killed_after_the_bulk_call_loses_no_row(tmp_path, sandbox):
    """kill -9 right after Marketing Cloud accepted the request, before its ID is recorded."""
    imported(tmp_path, 120)
    marker = tmp_path / "fault.pid"
    hub = HubProcesses(
        {
            "MC_AUTH_BASE_URL": sandbox.url,
            "MC_CLIENT_ID": CLIENT_ID,
            "MC_CLIENT_SECRET": CLIENT_SECRET,
            "MC_JWT_SECRET": JWT_SECRET,
            "MC_HTTP_TIMEOUT": "3",
            "HUB_Q_TIMEOUT": "8",
            "HUB_Q_RETRY": "20",
            "HUB_MC_ASYNC_WRITEBACK_THRESHOLD": "100",
            "HUB_FAULT_POINT": "after-mc-bulk-call:60",
            "HUB_FAULT_MARKER": str(marker),
        }
    )
    try:
        hub.start_cluster()
        assert wait_until(marker.exists, timeout=60)
        os.kill(int(marker.read_text()), signal.SIGKILL)
        assert BulkWriteback.objects.get().state == "submitting"
        assert wait_until(
            lambda: CrossReference.objects.filter(writeback_state="written").count() == 120, timeout=180
        ), list(CrossReference.objects.values_list("writeback_state").annotate(n=Count("id")))
    finally:
        hub.stop()
    assert BulkWriteback.objects.order_by("id").first().state == "released"
    assert_all_written(sandbox)
