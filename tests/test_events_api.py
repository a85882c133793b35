"""The generic CIM intake for the other systems of use case 1, and the read API."""

from __future__ import annotations

import zlib

import pytest

from customers.models import Individual
from integrations.choices import EventStatus
from integrations.models import ApiClient, InboundEvent
from tests.conftest import subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db(transaction=True)


def cim_event(event_id: str, record_id: str, email: str, source: str = "B2C_COMMERCE", **fields):
    individual = {
        "id": record_id,
        "partyType": "Individual",
        "firstName": "Grace",
        "lastName": "Hopper",
        "contactPoints": [
            {"contactPointType": ["ContactPointEmail"], "emailAddress": email},
            # One phone per record: a shared phone and name would make them one person.
            {
                "contactPointType": "ContactPointPhone",
                "telephoneNumber": f"+1 (555) 010-{zlib.crc32(record_id.encode()) % 10_000:04d}",
            },
        ],
        "externalIds": [{"id": "", "externalId": "", "externalIdType": ["MDM"]}],
    }
    individual.update(fields)
    return {"id": event_id, "source": source, "occurredAt": "2026-11-20T10:00:00Z", "individual": individual}


def post(api, path, body):
    return api.post(f"{api.base_url}{path}", json=body, timeout=10)


def test_batch_is_accepted_processed_and_readable(api):
    events = [cim_event(f"e{i}", f"cust-{i}", f"grace{i}@example.com") for i in range(3)]
    response = post(api, "/api/v1/events", {"events": events})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 3 and body["duplicates"] == 0
    assert [e["id"] for e in body["events"]] == ["e0", "e1", "e2"]
    run_queued()
    assert Individual.objects.count() == 3
    assert InboundEvent.objects.filter(status=EventStatus.SYNCED).count() == 3

    found = api.get(
        f"{api.base_url}/api/v1/individuals",
        params={"externalIdType": "B2C_COMMERCE", "externalId": "cust-1"},
        timeout=10,
    ).json()
    assert found["count"] == 1
    individual = found["results"][0]
    assert individual["firstName"] == "Grace"
    assert {c["contactPointType"] for c in individual["contactPoints"]} == {"ContactPointEmail", "ContactPointPhone"}
    assert individual["externalIds"][0]["externalIdType"] == "B2C_COMMERCE"

    detail = api.get(f"{api.base_url}/api/v1/individuals/{individual['id']}", timeout=10)
    assert detail.status_code == 200 and detail.json()["id"] == individual["id"]
    by_email = api.get(f"{api.base_url}/api/v1/individuals", params={"email": "GRACE2@example.com"}, timeout=10).json()
    assert by_email["count"] == 1

    run_id = InboundEvent.objects.order_by("id").first().runs.get().pk
    run = api.get(f"{api.base_url}/api/v1/sync-runs/{run_id}", timeout=10).json()
    assert run["status"] == "succeeded" and [s["seq"] for s in run["steps"]] == list(range(1, len(run["steps"]) + 1))
    writeback = next(s for s in run["steps"] if s["name"] == "write back master ID")
    assert writeback["outcome"] == "skipped"  # no write-back connector for B2C Commerce yet


def test_batch_is_all_or_nothing_and_errors_name_index_and_field(api):
    events = [cim_event("ok", "cust-1", "ok@example.com"), cim_event("bad", "cust-2", "not-an-email")]
    response = post(api, "/api/v1/events", {"events": events})
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "events[1].individual.contactPoints[0].emailAddress", "message": "is not a valid email address"}
    ]
    assert queued_tasks() == []
    assert InboundEvent.objects.get().status == EventStatus.REJECTED


@pytest.mark.parametrize(
    ("events", "field"),
    [
        ([{"id": "x", "source": "POS", "individual": {}}], "events[0].occurredAt"),
        (
            [{"id": "x", "source": "bad source", "occurredAt": "2026-01-01T00:00:00Z", "individual": {}}],
            "events[0].source",
        ),
        ([cim_event("x", "", "a@example.com")], "events[0].individual.id"),
        ([cim_event("x", "c", "a@example.com", birthDate="31/01/1990")], "events[0].individual.birthDate"),
        ([cim_event("x", "c", "a@example.com", firstName=["Grace"])], "events[0].individual.firstName"),
    ],
)
def test_invalid_events_name_the_field(api, events, field):
    response = post(api, "/api/v1/events", {"events": events})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


def test_batch_limits_and_malformed_json(api):
    too_many = [cim_event(f"e{i}", f"c{i}", f"p{i}@example.com") for i in range(1001)]
    assert post(api, "/api/v1/events", {"events": too_many}).status_code == 400
    bad = api.post(
        f"{api.base_url}/api/v1/events", data=b'{"events": [', timeout=10, headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "body"
    assert post(api, "/api/v1/events", {"events": []}).status_code == 400


def test_duplicates_in_and_across_batches_queue_nothing_new(api):
    event = cim_event("same", "cust-1", "dup@example.com")
    first = post(api, "/api/v1/events", {"events": [event, event]}).json()
    assert first["accepted"] == 1 and first["duplicates"] == 1
    second = post(api, "/api/v1/events", {"events": [event]}).json()
    assert second["duplicates"] == 1 and second["events"][0]["eventId"] == first["events"][0]["eventId"]
    assert len(queued_tasks()) == 1


def test_keys_are_required_hashed_scoped_and_revocable(api, live_server):
    import requests
    from django.utils import timezone

    url = f"{live_server.url}/api/v1/events"
    body = {"events": [cim_event("e", "c", "k@example.com")]}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    assert (
        requests.post(url, json=body, timeout=10, headers={"Authorization": "Bearer hub_nope_nope"}).status_code == 401
    )
    client = ApiClient.objects.get()
    raw_key = api.headers["Authorization"].split(" ", 1)[1]
    assert raw_key not in (client.key_hash, client.key_prefix) and len(client.key_hash) == 64

    _, read_only = ApiClient.issue("reader", ["read"])
    response = requests.post(url, json=body, timeout=10, headers={"Authorization": f"Bearer {read_only}"})
    assert response.status_code == 403

    client.revoked_at = timezone.now()
    client.save()
    assert post(api, "/api/v1/events", body).status_code == 401


def test_read_api_errors(api):
    assert api.get(f"{api.base_url}/api/v1/individuals/unknown", timeout=10).status_code == 404
    by_id_only = api.get(f"{api.base_url}/api/v1/individuals", params={"externalId": "x"}, timeout=10)
    assert by_id_only.status_code == 200 and by_id_only.json()["count"] == 0
    bad_email = api.get(f"{api.base_url}/api/v1/individuals", params={"email": "nope"}, timeout=10)
    assert bad_email.status_code == 400 and bad_email.json()["errors"][0]["field"] == "email"
    everyone = api.get(f"{api.base_url}/api/v1/individuals", timeout=10)
    assert everyone.status_code == 200 and everyone.json()["count"] == 0  # no filter: all, paginated


def test_journey_and_api_events_for_one_person_share_a_golden_record(api, journey, sandbox):
    journey.execute(subscriber(email="ada@example.com"))
    post(
        api,
        "/api/v1/events",
        {"events": [cim_event("e1", "cust-9", "ADA@example.com", firstName="Ada", lastName="Lovelace")]},
    )
    run_queued()
    individual = Individual.objects.get()
    assert set(individual.cross_references.values_list("system", flat=True)) == {"MARKETING_CLOUD", "B2C_COMMERCE"}


def test_each_api_key_is_throttled_with_a_shared_counter(api, settings):
    from django.core.cache import caches

    caches["shared"].clear()
    settings.API_KEY_RATE = "3/min"
    url = f"{api.base_url}/api/v1/individuals"
    codes = [api.get(url, params={"email": "x@example.com"}, timeout=10).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = api.get(url, params={"email": "x@example.com"}, timeout=10)
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert int(refused.headers["Retry-After"]) > 0
    # The counter lives in the database cache, where every gunicorn worker sees it.
    assert caches["shared"].get(f"throttle:api-key:{ApiClient.objects.get().pk}")


def test_filters_apply_to_one_cross_reference(api):
    post(
        api,
        "/api/v1/events",
        {
            "events": [
                cim_event("e1", "cust-1", "one@example.com"),
                cim_event("e2", "cust-2", "two@example.com", source="POS"),
            ]
        },
    )
    run_queued()
    url = f"{api.base_url}/api/v1/individuals"
    assert api.get(url, params={"externalIdType": "POS"}, timeout=10).json()["count"] == 1
    assert api.get(url, params={"externalIdType": "POS", "externalId": "cust-1"}, timeout=10).json()["count"] == 0
    assert (
        api.get(url, params={"externalIdType": "b2c_commerce", "externalId": "cust-1"}, timeout=10).json()["count"] == 1
    )
    bad = post(api, "/api/v1/events", {"events": [cim_event("e3", "x", "x@example.com", id=False)]})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "events[0].individual.id"
