"""kill -9 at the four points of the pipeline, and mid-request: the task reruns, nothing doubles.

Real processes (gunicorn, qcluster), real signals, real PostgreSQL, the Marketing Cloud sandbox
over HTTP. A named fault point (``integrations.faults``) holds the worker at the spot long enough
to kill it; django-q2 hands the unacknowledged task out again once its lease (20 s here) ends.
"""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import pytest
import requests
from django.core.management import call_command

from customers.models import CrossReference, Individual
from integrations.models import InboundEvent
from sandboxes.marketing_cloud.journey import build_execute_payload, send_execute, sign_execute
from tests.conftest import CLIENT_ID, CLIENT_SECRET, JWT_SECRET, subscriber
from tests.processes import HubProcesses, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_hub(sandbox, tmp_path: Path, point: str) -> tuple[HubProcesses, Path]:
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
            "HUB_FAULT_POINT": point,
            "HUB_FAULT_MARKER": str(marker),
        }
    )
    return hub, marker


@pytest.mark.parametrize("point", ["after-match", "after-commit", "during-mc-call", "after-mc-call"])
def test_a_worker_killed_at_each_point_leaves_one_record_and_the_right_master_id(sandbox, tmp_path, point):
    if point == "during-mc-call":
        sandbox.configure(latency_ms=3000)  # the call is in flight when the worker dies
        spec = "before-mc-call:0"
    else:
        spec = f"{point}:60"
    hub, marker = start_hub(sandbox, tmp_path, spec)
    try:
        hub.start_web()
        hub.start_cluster()
        response = send_execute(f"{hub.url}/api/v1/marketing-cloud/journey/execute", subscriber(), JWT_SECRET)
        assert response.status_code == 200
        assert wait_until(marker.exists, timeout=60)
        if point == "during-mc-call":
            time.sleep(1)  # the PUT is on the wire; the sandbox answers after 3 s
        os.kill(int(marker.read_text()), signal.SIGKILL)
        sandbox.configure(latency_ms=0)
        assert wait_until(lambda: InboundEvent.objects.filter(status="synced").count() == 1, timeout=120), list(
            InboundEvent.objects.values_list("status", "reason")
        )
    finally:
        hub.stop()
    assert Individual.objects.count() == 1 and CrossReference.objects.count() == 1
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == Individual.objects.get().master_id
    out = io.StringIO()
    call_command("verify_invariants", "--window", "0", "--compare-marketing-cloud", stdout=out)
    assert "All checked invariants hold." in out.getvalue()


def test_a_web_worker_killed_mid_batch_stores_nothing_then_the_retry_stores_all(sandbox, tmp_path, api_key):
    hub, marker = start_hub(sandbox, tmp_path, "intake-mid-batch:60")
    events = [
        {
            "id": f"e{i}",
            "source": "POS",
            "occurredAt": "2026-11-20T10:00:00Z",
            "individual": {
                "id": f"c{i}",
                "contactPoints": [{"contactPointType": "ContactPointEmail", "emailAddress": f"c{i}@example.com"}],
            },
        }
        for i in range(200)
    ]
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        hub.start_web()
        session = requests.Session()
        result: dict[str, object] = {}

        def post() -> None:
            try:
                result["status"] = session.post(
                    f"{hub.url}/api/v1/events", json={"events": events}, timeout=30, headers=headers
                ).status_code
            except requests.RequestException as exc:
                result["error"] = type(exc).__name__

        import threading

        thread = threading.Thread(target=post)
        thread.start()
        assert wait_until(marker.exists, timeout=30)
        assert InboundEvent.objects.count() == 0  # not committed yet
        os.kill(int(marker.read_text()), signal.SIGKILL)
        thread.join(30)
        assert "status" not in result or result["status"] >= 500, result
        assert InboundEvent.objects.count() == 0  # all or nothing: nothing
        retry = session.post(f"{hub.url}/api/v1/events", json={"events": events}, timeout=30, headers=headers)
        assert retry.status_code == 200 and retry.json()["accepted"] == 200
        assert InboundEvent.objects.count() == 200
    finally:
        hub.stop()


def test_one_event_delivered_five_times_at_once_is_stored_and_processed_once(sandbox, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    hub, _ = start_hub(sandbox, tmp_path, "none")
    body = sign_execute(
        build_execute_payload(subscriber(), definition_instance_id="d1", activity_instance_id="a1"), JWT_SECRET
    )
    try:
        hub.start_web()
        hub.start_cluster()
        url = f"{hub.url}/api/v1/marketing-cloud/journey/execute"

        def post(_: int) -> dict:
            return requests.post(url, data=body, timeout=30, headers={"Content-Type": "application/jwt"}).json()

        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(post, range(5)))
        assert len({a["eventId"] for a in answers}) == 1
        assert sorted(a["duplicate"] for a in answers) == [False, True, True, True, True]
        assert wait_until(lambda: InboundEvent.objects.filter(status="synced").count() == 1, timeout=60)
    finally:
        hub.stop()
    assert InboundEvent.objects.count() == 1 and Individual.objects.count() == 1
    assert sandbox.count("PUT", "/hub/v1/dataevents") == 1
