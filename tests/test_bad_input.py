"""Bad input answers 400 (or 401, 411, 413) naming the field, never 500, and stores nothing half-done.

Lone surrogates, NaN/Infinity/overflowing numbers, deep nesting, NUL in paths and queries,
out-of-range dates, too many contact points, Journey JWTs without a bounded lifetime,
chunked bodies, the read API's page size, and what a dead letter's reason may say.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
import requests
from django.db import connection

from customers.models import Individual
from integrations.choices import EventStatus
from integrations.marketing_cloud.models import EnsNotification
from integrations.models import ApiClient, DeadLetter, InboundEvent, SyncRun, SyncStep
from sandboxes.marketing_cloud.ens import email_unsubscribe_event, encode_batch, sign_ens
from sandboxes.marketing_cloud.journey import build_execute_payload
from tests.conftest import JWT_SECRET, subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db(transaction=True)

PLACEHOLDER = '"__BAD__"'
SURROGATE = '"\\ud800"'  # a JSON escape for a lone high surrogate: valid JSON syntax, not a Unicode string
ENS_KEY = "V27FXfqI3DnhfQW1bhFDeJixpt8eDAY5R24UJI3cK6M="


def cim_event(**individual: Any) -> dict[str, Any]:
    return {
        "id": "e1",
        "source": "POS",
        "occurredAt": "2026-11-20T10:00:00Z",
        "individual": {
            "id": "c1",
            "firstName": "Grace",
            "lastName": "Hopper",
            "contactPoints": [{"contactPointType": "ContactPointEmail", "emailAddress": "grace@example.com"}],
            **individual,
        },
    }


def with_raw(document: Any, raw: str) -> str:
    """The document as JSON text, with the ``"__BAD__"`` placeholder replaced by raw JSON text."""
    text = json.dumps(document)
    assert PLACEHOLDER in text
    return text.replace(PLACEHOLDER, raw)


def post_events(api: requests.Session, body: str | bytes) -> requests.Response:
    return api.post(
        f"{api.base_url}/api/v1/events",
        data=body.encode() if isinstance(body, str) else body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def assert_problem(response: requests.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    problem = response.json()
    if field is not None:
        assert [e["field"] for e in problem["errors"]][:1] == [field], problem
    return problem


def assert_kept_as_rejected(problem: dict[str, Any], body: bytes, field: str) -> None:
    event = InboundEvent.objects.get()
    assert event.pk == problem["eventId"] and event.status == EventStatus.REJECTED
    assert bytes(event.raw_body) == body and field in event.reason
    assert queued_tasks() == [] and Individual.objects.count() == 0


# ---------------------------------------------------------------------------
# The events API
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [SURROGATE, '"Gr\\udc00ace"', "NaN", "Infinity", "-Infinity", "1e400", "-1e400"],
    ids=["lone-high-surrogate", "lone-low-surrogate", "nan", "infinity", "minus-infinity", "overflow", "-overflow"],
)
def test_events_api_refuses_values_json_cannot_carry_naming_the_field(api, raw):
    body = with_raw({"events": [cim_event(firstName="__BAD__")]}, raw)
    problem = assert_problem(post_events(api, body), 400, "events[0].individual.firstName")
    assert_kept_as_rejected(problem, body.encode(), "events[0].individual.firstName")


def test_events_api_refuses_a_lone_surrogate_in_a_key(api):
    body = json.dumps({"events": [cim_event(extra={"__KEY__": 1})]}).replace('"__KEY__"', SURROGATE)
    problem = assert_problem(post_events(api, body), 400, "events[0].individual.extra")
    assert "key" in problem["errors"][0]["message"]


@pytest.mark.parametrize("depth", [100, 100_000])
def test_events_api_refuses_deep_nesting(api, depth):
    body = with_raw({"events": [cim_event(extra="__BAD__")]}, "[" * depth + "]" * depth)
    problem = assert_problem(post_events(api, body), 400, "body")
    assert "deep" in problem["errors"][0]["message"]
    assert_kept_as_rejected(problem, body.encode(), "body")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"individual": {"birthDate": "1899-12-31"}}, "events[0].individual.birthDate"),
        ({"occurredAt": "2101-01-01T00:00:00Z"}, "events[0].occurredAt"),
        ({"occurredAt": "1899-12-31T23:59:59Z"}, "events[0].occurredAt"),
        ({"occurredAt": "2026-11-20T10:00:00+15:00"}, "events[0].occurredAt"),
        ({"occurredAt": "2026-11-20T10:00:00-14:30"}, "events[0].occurredAt"),
        ({"occurredAt": "0001-01-01T00:00:00+01:00"}, "events[0].occurredAt"),
        (
            {"individual": {"doNotMarketFromUpdateDate": "0001-01-01T00:00:00+14:00"}},
            "events[0].individual.doNotMarketFromUpdateDate",
        ),
        (
            {"individual": {"doNotMarketFromUpdateDate": "2026-01-01T00:00:00+23:00"}},
            "events[0].individual.doNotMarketFromUpdateDate",
        ),
        (
            {
                "individual": {
                    "contactPoints": [
                        {"contactPointType": "ContactPointEmail", "emailAddress": f"g{i}@example.com"}
                        for i in range(51)
                    ]
                }
            },
            "events[0].individual.contactPoints",
        ),
    ],
)
def test_events_api_refuses_what_could_never_be_processed(api, change, field):
    event = cim_event(**change.get("individual", {}))
    event.update({k: v for k, v in change.items() if k != "individual"})
    body = json.dumps({"events": [event]})
    problem = assert_problem(post_events(api, body), 400, field)
    assert_kept_as_rejected(problem, body.encode(), field)


def test_events_api_accepts_the_edges_of_every_range(api):
    event = cim_event(
        birthDate="1900-01-01",
        doNotMarketFromUpdateDate="2100-12-31T23:59:59-14:00",
        contactPoints=[
            {"contactPointType": "ContactPointEmail", "emailAddress": f"g{i}@example.com"} for i in range(50)
        ],
    )
    event["occurredAt"] = "1900-01-01T00:00:00+14:00"
    response = post_events(api, json.dumps({"events": [event]}))
    assert response.status_code == 200, response.text
    run_queued()
    individual = Individual.objects.get()
    assert individual.contact_points.count() == 50 and str(individual.birth_date) == "1900-01-01"
    assert DeadLetter.objects.count() == 0


# ---------------------------------------------------------------------------
# Journey Builder's execute call (JWT claims) and its lifecycle calls
# ---------------------------------------------------------------------------
def signed_text(claims_text: str, secret: str = JWT_SECRET) -> bytes:
    """A JWT over exactly this claims text (so it can hold what json.dumps would not write)."""
    return jwt.PyJWS().encode(claims_text.encode(), secret, algorithm="HS256").encode()


@pytest.mark.parametrize("raw", [SURROGATE, "NaN", "1e400"], ids=["surrogate", "nan", "overflow"])
def test_journey_refuses_claims_json_cannot_carry_naming_the_field(journey, raw):
    body = signed_text(with_raw(build_execute_payload(subscriber(FirstName="__BAD__")), raw))
    problem = assert_problem(journey.post_raw(body), 400, "inArguments[3].FirstName")
    assert_kept_as_rejected(problem, body, "inArguments[3].FirstName")


def test_journey_refuses_deeply_nested_claims(journey):
    body = signed_text(with_raw(build_execute_payload(subscriber(FirstName="__BAD__")), "[" * 50_000 + "]" * 50_000))
    problem = assert_problem(journey.post_raw(body), 400, "body")
    assert_kept_as_rejected(problem, body, "body")


def test_journey_refuses_a_deeply_nested_unsigned_header(journey):
    import base64

    header = base64.urlsafe_b64encode(b"[" * 50_000 + b"]" * 50_000).rstrip(b"=")
    assert_problem(journey.post_raw(header + b".e30.c2ln"), 401)
    assert InboundEvent.objects.count() == 0


def claims(**changes: Any) -> dict[str, Any]:
    payload = build_execute_payload(subscriber())
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"exp": None}, "no exp"),
        ({"exp": None, "iat": None}, "neither exp nor iat"),
        ({"exp": int(time.time()) + 3600}, "an hour's lifetime"),
        ({"exp": int(time.time()) + 86400 * 365, "iat": None}, "a year ahead, no iat"),
        ({"exp": "soon"}, "exp not a number"),
    ],
)
def test_journey_refuses_a_jwt_without_a_bounded_lifetime(journey, change, why):
    body = jwt.encode(claims(**change), JWT_SECRET, algorithm="HS256").encode()
    assert_problem(journey.post_raw(body), 401)
    assert InboundEvent.objects.count() == 0, why


def test_journey_accepts_what_the_emulator_sends(journey):
    response = journey.execute(subscriber())
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("action", ["save", "publish"])
def test_lifecycle_calls_need_exp_too(live_server, sandbox, action):
    url = f"{live_server.url}/api/v1/marketing-cloud/journey/{action}"
    headers = {"Content-Type": "application/jwt"}
    no_exp = jwt.encode({"activityObjectID": "a1", "journeyId": "j1"}, JWT_SECRET, algorithm="HS256")
    assert requests.post(url, data=no_exp, headers=headers, timeout=10).status_code == 401
    now = int(time.time())
    fine = jwt.encode({"activityObjectID": "a1", "iat": now, "exp": now + 300}, JWT_SECRET, algorithm="HS256")
    assert requests.post(url, data=fine, headers=headers, timeout=10).status_code == 200
    nested = signed_text(f'{{"exp": {now + 300}, "x": {"[" * 50_000 + "]" * 50_000}}}')
    assert requests.post(url, data=nested, headers=headers, timeout=10).status_code == 400


# ---------------------------------------------------------------------------
# ENS batches
# ---------------------------------------------------------------------------
@pytest.fixture
def ens(live_server, settings):
    settings.MC_ENS_SIGNATURE_KEY = ENS_KEY
    url = f"{live_server.url}/api/v1/marketing-cloud/ens"

    def post(body: bytes, *, signed: bool = True) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if signed:
            headers["x-sfmc-ens-signature"] = sign_ens(body, ENS_KEY)
        return requests.post(url, data=body, headers=headers, timeout=30)

    return post


def ens_batch_with(path: tuple[str, ...], raw: str) -> bytes:
    good = email_unsubscribe_event("SK-1", subscriber_id="1", email_address="a@example.com")
    bad = email_unsubscribe_event("SK-2", subscriber_id="2", email_address="b@example.com")
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "__BAD__"
    return encode_batch([good, bad]).replace(PLACEHOLDER.encode(), raw.encode())


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        (("info", "to"), SURROGATE, "[1].info.to"),
        (("composite", "subscriberId"), '"1\\udfff"', "[1].composite.subscriberId"),
        (("timestampUTC",), "NaN", "[1].timestampUTC"),
        (("timestampUTC",), "1e400", "[1].timestampUTC"),
        (("timestampUTC",), "1e20", "[1].timestampUTC"),
        (("timestampUTC",), "-62135596800001", "[1].timestampUTC"),
    ],
)
def test_ens_refuses_a_signed_batch_it_cannot_store_naming_the_field(ens, path, raw, field):
    assert_problem(ens(ens_batch_with(path, raw)), 400, field)
    assert EnsNotification.objects.count() == 0 and queued_tasks() == []


def test_ens_refuses_deep_nesting_signed_or_not(ens):
    body = ens_batch_with(("info", "to"), "[" * 100_000 + "]" * 100_000)
    assert_problem(ens(body, signed=False), 401)
    assert_problem(ens(body), 400, "body")
    assert EnsNotification.objects.count() == 0


def test_ens_still_takes_a_good_batch(ens):
    body = encode_batch([email_unsubscribe_event("SK-1", subscriber_id="1", email_address="zoë@example.com")])
    assert ens(body).status_code == 200
    assert EnsNotification.objects.count() == 1


# ---------------------------------------------------------------------------
# Steward pins (API and admin)
# ---------------------------------------------------------------------------
@pytest.fixture
def golden(api):
    assert post_events(api, json.dumps({"events": [cim_event()]})).status_code == 200
    run_queued()
    return Individual.objects.get()


@pytest.fixture
def steward(live_server):
    _, key = ApiClient.issue("steward-client", ["read", "steward"])
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    return session


@pytest.mark.parametrize(
    ("attribute", "body"),
    [
        ("first_name", '{"value": "\\ud800"}'),
        ("first_name", '{"value": "Gr\\u0000ace"}'),
        ("first_name", '{"value": "Gr\\u0007ace"}'),
        ("first_name", '{"value": NaN}'),
        ("first_name", '{"value": 1e400}'),
        ("birth_date", '{"value": "1899-12-31"}'),
        ("birth_date", '{"value": "2999-01-01"}'),
    ],
)
def test_pin_refuses_bad_values_naming_the_field(live_server, golden, steward, attribute, body):
    url = f"{live_server.url}/api/v1/individuals/{golden.master_id}/pins/{attribute}"
    assert_problem(steward.put(url, data=body.encode(), timeout=10), 400, "value")
    golden.refresh_from_db()
    assert golden.pins == {} and golden.first_name == "Grace"


def test_pin_refuses_deep_nesting(live_server, golden, steward):
    url = f"{live_server.url}/api/v1/individuals/{golden.master_id}/pins/first_name"
    body = '{"value": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert_problem(steward.put(url, data=body.encode(), timeout=10), 400, "body")
    golden.refresh_from_db()
    assert golden.pins == {}


def test_admin_pin_refuses_control_characters(admin_client, golden):
    url = f"/admin/customers/individual/{golden.pk}/pin/?attribute=first_name"
    response = admin_client.post(url, {"attribute": "first_name", "value": "Gr\x00ace"}, follow=True)
    assert response.status_code == 200
    assert "control character" in response.content.decode()
    golden.refresh_from_db()
    assert golden.pins == {} and golden.first_name == "Grace"


# ---------------------------------------------------------------------------
# NUL and other control characters in paths and query strings
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/individuals/%00", "path"),
        ("/api/v1/individuals/abc%01def/sources", "path"),
        ("/api/v1/individuals?externalIdType=POS&externalId=c%001", "query.externalId"),
        ("/api/v1/individuals?email=a%00@example.com", "query.email"),
        ("/api/v1/individuals?ex%00ternalId=1", "query"),
    ],
)
def test_nul_in_path_or_query_is_refused_before_the_database_sees_it(api, path, field):
    assert_problem(api.get(f"{api.base_url}{path}", timeout=10), 400, field)


@pytest.mark.django_db
def test_nul_in_an_admin_search_is_refused(admin_client):
    response = admin_client.get("/admin/customers/individual/", {"q": "a\x00b"})
    assert response.status_code == 400
    assert json.loads(response.content)["errors"][0]["field"] == "query.q"


# ---------------------------------------------------------------------------
# Chunked bodies
# ---------------------------------------------------------------------------
def chunks(body: bytes, size: int = 1000):
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.slow
def test_a_chunked_body_is_read_whole_under_gunicorn(transactional_db):
    from tests.processes import HubProcesses

    _, key = ApiClient.issue("chunked", ["ingest", "read"], ["POS"])
    hub = HubProcesses({}, web_workers=1)
    try:
        hub.start_web()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        events = [cim_event(id=f"c{i}") | {"id": f"e{i}"} for i in range(20)]
        body = json.dumps({"events": events}).encode()
        response = requests.post(f"{hub.url}/api/v1/events", data=chunks(body), headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 20
        too_big = b'{"events": [' + b" " * (6 * 1024 * 1024) + b"]}"
        response = requests.post(f"{hub.url}/api/v1/events", data=chunks(too_big, 65536), headers=headers, timeout=30)
        assert response.status_code == 413
        jwt_body = jwt.encode(build_execute_payload(subscriber()), JWT_SECRET, algorithm="HS256").encode()
        response = requests.post(
            f"{hub.url}/api/v1/marketing-cloud/journey/execute",
            data=chunks(jwt_body, 100),
            headers={"Content-Type": "application/jwt"},
            timeout=30,
        )
        # The hub process has no MC_JWT_SECRET: a 401 says the token was read and checked, not taken as empty.
        assert response.status_code == 401 and "JWT" in response.json()["detail"]
    finally:
        hub.stop()
    assert InboundEvent.objects.filter(status=EventStatus.QUEUED).count() == 20


def test_a_chunked_body_a_server_cannot_delimit_is_refused_411(api):
    body = json.dumps({"events": [cim_event()]}).encode()
    response = api.post(
        f"{api.base_url}/api/v1/events", data=chunks(body), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert_problem(response, 411)
    assert InboundEvent.objects.count() == 0


# ---------------------------------------------------------------------------
# The read API's page size
# ---------------------------------------------------------------------------
def test_read_api_page_size_is_capped(api):
    Individual.objects.bulk_create([Individual(first_name=f"P{i}") for i in range(205)])
    page = api.get(f"{api.base_url}/api/v1/individuals", params={"limit": 100_000}, timeout=30).json()
    assert page["count"] == 205 and len(page["results"]) == 200
    assert "limit=200" in page["next"]
    schema = api.get(f"{api.base_url}/api/schema/", headers={"Accept": "application/json"}, timeout=30).json()
    [limit] = [p for p in schema["paths"]["/api/v1/individuals"]["get"]["parameters"] if p["name"] == "limit"]
    assert limit["schema"]["maximum"] == 200


# ---------------------------------------------------------------------------
# Dead letters keep the error's class and codes, never SQL text with values in it
# ---------------------------------------------------------------------------
@pytest.fixture
def refusing_database():
    """A database that refuses contact points with an error quoting the value (as PostgreSQL does)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_contact_point() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM NEW.email_address::integer; RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_refuse_contact_point BEFORE INSERT ON customers_contactpoint "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_contact_point()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_refuse_contact_point ON customers_contactpoint")
        cursor.execute("DROP FUNCTION test_refuse_contact_point()")


def test_dead_letter_reason_never_holds_sql_or_values(api, refusing_database):
    assert post_events(api, json.dumps({"events": [cim_event()]})).status_code == 200
    run_queued()
    letter = DeadLetter.objects.get()
    texts = [letter.reason, InboundEvent.objects.get().reason]
    texts += list(SyncRun.objects.values_list("last_error", flat=True))
    texts += list(SyncStep.objects.values_list("detail", flat=True))
    for text in texts:
        assert "grace@example.com" not in text and "integer" not in text, text
        assert "SELECT" not in text and "LINE" not in text and "CONTEXT" not in text, text
    assert letter.reason.startswith("DataError") and "22P02" in letter.reason, letter.reason
