"""``/metrics``: a small real run (events API, journey calls, the resolver, write-backs) read back exactly."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from integrations.models import MetricSample
from tests.conftest import subscriber
from tests.queue import run_queued
from tests.test_events_api import cim_event

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-the-tests-0123456789"


def scrape(base_url: str, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(f"{base_url}/metrics", headers=headers, timeout=10)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition by (sample name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def test_metrics_count_a_small_run_exactly(api, journey, sandbox, settings, live_server):
    settings.METRICS_TOKEN = TOKEN
    # Events API: two accepted events, and one refused batch (kept as a rejected event).
    accepted = api.post(
        f"{api.base_url}/api/v1/events",
        json={"events": [cim_event("m1", "cust-m1", "m1@example.com"), cim_event("m2", "cust-m2", "m2@example.com")]},
        timeout=10,
    )
    assert accepted.status_code == 200, accepted.text
    refused = api.post(
        f"{api.base_url}/api/v1/events", json={"events": [cim_event("m3", "cust-m3", "not-an-email")]}, timeout=10
    )
    assert refused.status_code == 400
    run_queued()  # one resolver batch of two
    # Journey Builder: one subscriber synced with its write-back, one whose write-back is refused (400).
    assert journey.execute(subscriber()).status_code == 200
    run_queued()
    sandbox.inject("400")
    assert journey.execute(subscriber(key="SK-2", email="grace@example.com", FirstName="Grace")).status_code == 200
    run_queued()

    response = scrape(live_server.url)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    found = samples(response.text)
    api_b2c = {"source": "B2C_COMMERCE", "channel": "api"}
    mc = {"source": "MARKETING_CLOUD", "channel": "mc_journey"}
    assert value(found, "hub_events_received_total", **api_b2c) == 2
    assert value(found, "hub_events_received_total", source="", channel="api") == 1
    assert value(found, "hub_events_received_total", **mc) == 2
    assert value(found, "hub_events_synced_total", **api_b2c) == 2
    assert value(found, "hub_events_synced_total", **mc) == 1
    assert value(found, "hub_events_dead_lettered_total", **mc) == 1
    assert value(found, "hub_events_failed_total", **mc) == 1
    assert value(found, "hub_events_failed_total", **api_b2c) is None
    assert value(found, "hub_events_rejected_total", source="", channel="api") == 1
    assert value(found, "hub_events", **api_b2c, status="synced") == 2
    assert value(found, "hub_events", **mc, status="synced") == 1
    assert value(found, "hub_events", **mc, status="dead") == 1
    # Passing through queued, processing and writeback left nothing behind in those states.
    assert value(found, "hub_events", **mc, status="writeback") is None
    assert value(found, "hub_events", **api_b2c, status="queued") is None
    # Three batches: the API's two events together, then each journey call alone.
    assert value(found, "hub_resolver_batch_size_count") == 3
    assert value(found, "hub_resolver_batch_size_sum") == 4
    assert value(found, "hub_resolver_batch_size_bucket", le="1.0") == 2
    assert value(found, "hub_resolver_batch_size_bucket", le="5.0") == 3
    assert value(found, "hub_resolver_batch_duration_seconds_count") == 3
    # Marketing Cloud: one token, the first write-back, and the refused one.
    assert value(found, "hub_outbound_call_duration_seconds_count", system="marketing_cloud", status="200") == 2
    assert value(found, "hub_outbound_call_duration_seconds_count", system="marketing_cloud", status="400") == 1
    assert value(found, "hub_queue_events", status="queued") == 0
    assert value(found, "hub_queue_oldest_ready_event_age_seconds") == 0
    assert value(found, "hub_writeback_backlog", system="MARKETING_CLOUD") is None
    assert value(found, "hub_match_candidates_open") == 0
    assert value(found, "hub_breaker_state", system="MARKETING_CLOUD", state="closed") == 1
    assert value(found, "hub_breaker_state", system="MARKETING_CLOUD", state="open") == 0

    # The scrape folded every sample; a second one reads the same totals.
    assert not MetricSample.objects.exists()
    again = samples(scrape(live_server.url).text)
    for name in ("hub_events_received_total", "hub_events_synced_total", "hub_resolver_batch_size_count"):
        assert {k: v for k, v in again.items() if k[0] == name} == {k: v for k, v in found.items() if k[0] == name}


def test_queue_depth_backlog_and_oldest_ready_age(api, settings, live_server):
    settings.METRICS_TOKEN = TOKEN
    events = [cim_event(f"q{i}", f"cust-q{i}", f"q{i}@example.com") for i in range(3)]
    assert api.post(f"{api.base_url}/api/v1/events", json={"events": events}, timeout=10).status_code == 200
    found = samples(scrape(live_server.url).text)
    assert value(found, "hub_queue_events", status="queued") == 3
    assert value(found, "hub_events", source="B2C_COMMERCE", channel="api", status="queued") == 3
    assert value(found, "hub_queue_tasks", state="ready") == 1  # the resolver's wake-up
    assert value(found, "hub_queue_oldest_ready_event_age_seconds") > 0


def test_metrics_are_hidden_without_a_configured_token(settings, live_server):
    settings.METRICS_TOKEN = ""
    response = scrape(live_server.url)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"


def test_metrics_need_the_bearer_token(settings, live_server):
    settings.METRICS_TOKEN = TOKEN
    missing = scrape(live_server.url, token=None)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "hub_events" not in missing.text
    wrong = scrape(live_server.url, token=TOKEN[:-1] + "x")
    assert wrong.status_code == 401 and "hub_events" not in wrong.text
    basic = requests.get(f"{live_server.url}/metrics", auth=("prometheus", TOKEN), timeout=10)
    assert basic.status_code == 401
    right = scrape(live_server.url)
    assert right.status_code == 200 and "hub_events_received_total" in right.text
