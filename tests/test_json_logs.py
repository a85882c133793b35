"""``HUB_LOG_FORMAT=json``: one JSON object a line, with the event and sync-run IDs, and no personal data."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hub.log_context import LogContextFilter, log_context
from hub.log_format import HubJsonFormatter
from integrations.models import InboundEvent, SyncRun
from tests.conftest import subscriber
from tests.queue import run_queued
from tests.test_events_api import cim_event
from tests.test_no_pii_in_logs import PERSONAL

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"timestamp", "level", "logger", "message", "event_id", "sync_run_id"}


@pytest.fixture
def json_lines():
    """What the root logger writes through the hub's JSON formatter and context filter, as lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(HubJsonFormatter())
    handler.addFilter(LogContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: stream.getvalue().splitlines()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.django_db(transaction=True)
def test_json_lines_carry_ids_and_no_personal_data(json_lines, journey, sandbox, api, live_server):
    journey.execute(subscriber())  # accepted
    journey.execute(subscriber(EmailAddress="not-an-email"))  # refused: 400
    sandbox.inject("400")
    journey.execute(subscriber(key="SK-2", email="grace@example.com", FirstName="Grace", LastName="Hopper"))
    run_queued()
    api.post(f"{api.base_url}/api/v1/events", json={"events": [cim_event("j1", "cust-j1", "not-an-email")]}, timeout=10)
    # A refused read whose query string holds an email: Django's request logger attaches the request.
    refused = requests.get(f"{live_server.url}/api/v1/individuals?email=grace@example.com", timeout=10)
    assert refused.status_code == 401

    lines = json_lines()
    assert lines, "nothing was logged: the scan would prove nothing"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert set(record) >= FIELDS, record
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert record["timestamp"].endswith("+00:00")
    text = "\n".join(lines)
    for value in PERSONAL:
        assert value not in text, f"personal data in the JSON logs: {value!r}"

    first, second = InboundEvent.objects.filter(channel="mc_journey", status__in=["synced", "dead"]).order_by("id")
    stored = [r for r in records if r["logger"] == "integrations.intake" and "stored" in r["message"]]
    assert {r["event_id"] for r in stored} >= {first.pk, second.pk}
    resolved = {
        r["event_id"]: r["sync_run_id"]
        for r in records
        if r["message"].startswith("event ") and "resolved" in r["message"]
    }
    assert resolved[first.pk] == SyncRun.objects.get(event=first).pk
    assert resolved[second.pk] == SyncRun.objects.filter(event=second).order_by("id").first().pk
    assert any(r["logger"] == "django.request" and "Unauthorized" in r["message"] for r in records), (
        "the request logger's line about the refused read was not scanned"
    )


def test_the_context_gives_ids_to_lines_logged_deeper_down(json_lines):
    logger = logging.getLogger("customers.resolution.engine")
    with log_context(event_id=41, sync_run_id=7):
        logger.warning("inside")
        logger.warning("own ids win", extra={"event_id": 42})
    logger.warning("outside")
    inside, own, outside = (json.loads(line) for line in json_lines())
    assert (inside["event_id"], inside["sync_run_id"]) == (41, 7)
    assert (own["event_id"], own["sync_run_id"]) == (42, 7)
    assert (outside["event_id"], outside["sync_run_id"]) == (None, None)
    assert outside["logger"] == "customers.resolution.engine" and outside["message"] == "outside"


def test_a_forged_line_and_a_traceback_stay_in_one_json_line(json_lines):
    logger = logging.getLogger("integrations.marketing_cloud.ens")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("callback %s refused", "abc\n2026-01-01 INFO forged line")
    (line,) = json_lines()
    record = json.loads(line)
    assert record["message"] == "callback abc\n2026-01-01 INFO forged line refused"
    assert "ValueError: boom" in record["exc_info"]


def _run_with_format(log_format: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import logging, django; django.setup(); "
        "logging.getLogger('integrations.resolver')"
        ".warning('event %s failed', 5, extra={'event_id': 5, 'sync_run_id': 9})"
    )
    env = {**os.environ, "HUB_LOG_FORMAT": log_format, "HUB_TESTING": "1", "DJANGO_SETTINGS_MODULE": "hub.settings"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_hub_log_format_json_configures_the_console_and_text_stays_the_default():
    result = _run_with_format("json")
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert record["message"] == "event 5 failed" and record["level"] == "WARNING"
    assert (record["event_id"], record["sync_run_id"], record["logger"]) == (5, 9, "integrations.resolver")
    text = _run_with_format("text")
    assert text.returncode == 0 and text.stderr.split(" ", 3)[2:4] == [
        "WARNING",
        "integrations.resolver event 5 failed\n",
    ]
    refused = _run_with_format("xml")
    assert refused.returncode != 0 and "HUB_LOG_FORMAT must be text or json" in refused.stderr
