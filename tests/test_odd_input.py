"""Odd input is a 4xx naming the field, never a 500, and never accepted only to be dead-lettered.

Over real HTTP (live_server, requests) for the APIs and the journey endpoint; Django's test
client for the admin lists. Each case here was a 500, or a 200 whose event was dead-lettered,
before the fix.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import requests
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import models
from django.urls import reverse

from customers.api.stewardship import CandidatePagination
from customers.models import Individual, MatchCandidate, NotAMatch
from integrations.models import ApiClient, InboundEvent
from tests.conftest import subscriber
from tests.queue import run_queued
from tests.test_access import _event, _key_session
from tests.test_mdm import cim

pytestmark = pytest.mark.django_db(transaction=True)

HUGE = "99999999999999999999"


@pytest.fixture
def two_people(live_server) -> tuple[Individual, Individual]:
    pos = _key_session(live_server, "pos", ["POS"])
    batch = [
        _event("e1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com")),
        _event("e2", "POS", "p-2", cim("Bob", "Ray", email="bob@example.com")),
    ]
    assert pos.post(f"{pos.base_url}/api/v1/events", json={"events": batch}, timeout=10).status_code == 200
    run_queued()
    ann, bob = Individual.objects.order_by("pk")
    return ann, bob


@pytest.fixture
def steward_api(live_server) -> requests.Session:
    _, key = ApiClient.issue("steward-tool", ["steward", "read"], [])
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    session.base_url = live_server.url  # type: ignore[attr-defined]
    return session


def _fields(answer: requests.Response) -> list[str]:
    assert answer.headers["Content-Type"].startswith("application/problem+json"), answer.text[:200]
    return [e["field"] for e in answer.json().get("errors", [])]


# -- the steward API -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "merge", {"masterId": "not-a-master-id"}, "masterId"),
        ("post", "merge", {"masterId": "\x01" * 36}, "masterId"),
        ("post", "not-a-match", {"masterId": "x" * 5000}, "masterId"),
        ("post", "not-a-match", {"masterId": None, "reason": "x"}, "masterId"),
        ("post", "unmerge", {"externalIdType": "POS\x00", "externalId": "p-1"}, "externalIdType"),
        ("post", "unmerge", {"externalIdType": "POS", "externalId": "p\x1b-1"}, "externalId"),
        ("post", "unmerge", {"externalIdType": "POS", "externalId": "x" * 256}, "externalId"),
        ("put", "pins/name_suffix", {"value": "x" * 41}, "value"),
        ("put", "pins/first_name", {"value": 12}, "value"),
        ("put", "pins/birth_date", {"value": "1985-13-01"}, "value"),
    ],
)
def test_odd_steward_bodies_are_400_naming_the_field(two_people, steward_api, method, path, body, field):
    ann, _ = two_people
    url = f"{steward_api.base_url}/api/v1/individuals/{ann.master_id}/{path}"
    answer = getattr(steward_api, method)(url, json=body, timeout=10)
    assert answer.status_code == 400, (answer.status_code, answer.text[:200])
    assert set(_fields(answer)) == {field}


def test_a_not_a_match_reason_with_nul_is_a_400_and_nothing_is_stored(two_people, steward_api):
    ann, bob = two_people
    answer = steward_api.post(
        f"{steward_api.base_url}/api/v1/individuals/{ann.master_id}/not-a-match",
        json={"masterId": bob.master_id, "reason": "twins\x00"},
        timeout=10,
    )
    assert answer.status_code == 400 and _fields(answer) == ["reason"]
    assert not NotAMatch.objects.exists()


def test_a_pin_longer_than_its_column_is_refused_in_the_admin_too(two_people, client):
    ann, _ = two_people
    client.force_login(get_user_model().objects.create_superuser("stella", "", "pw-for-tests"))
    url = reverse("admin:customers_individual_pin", args=[ann.pk])
    answer = client.post(f"{url}?attribute=gender", {"attribute": "gender", "value": "x" * 33})
    assert answer.status_code == 302
    ann.refresh_from_db()
    assert "gender" not in ann.pins


def test_master_ids_well_formed_or_not_are_told_apart(two_people, steward_api):
    ann, _ = two_people
    base = f"{steward_api.base_url}/api/v1/individuals"
    unknown = str(uuid.uuid4())
    # A well-formed ID no record has: as before (404 in the path, 400 in the body).
    assert steward_api.post(f"{base}/{unknown}/merge", json={"masterId": ann.master_id}, timeout=10).status_code == 404
    in_body = steward_api.post(f"{base}/{ann.master_id}/merge", json={"masterId": unknown}, timeout=10)
    assert in_body.status_code == 400 and "no golden record" in in_body.json()["errors"][0]["message"]
    malformed = steward_api.post(f"{base}/{ann.master_id}/merge", json={"masterId": "M-1"}, timeout=10)
    assert malformed.status_code == 400 and "not a master ID" in malformed.json()["errors"][0]["message"]
    assert (
        steward_api.post(f"{base}/not-a-master-id/merge", json={"masterId": ann.master_id}, timeout=10).status_code
        == 404
    )
    cleared = steward_api.delete(f"{base}/{ann.master_id}/not-a-match", params={"masterId": "nope"}, timeout=10)
    assert cleared.status_code == 400 and _fields(cleared) == ["masterId"]


# -- the review queue's cursor ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        "p=2024",
        "p=garbage",
        "p=0001-01-01 00:00:00+14:00",  # converting it to UTC leaves the years Python knows
        "p=99999-01-01 00:00:00+00:00",
        f"o=5&r=1&p={HUGE}",
    ],
)
def test_a_cursor_with_a_position_it_cannot_have_is_a_400(two_people, steward_api, cursor):
    encoded = base64.b64encode(cursor.encode()).decode()
    answer = steward_api.get(f"{steward_api.base_url}/api/v1/match-candidates", params={"cursor": encoded}, timeout=10)
    assert answer.status_code == 400, (answer.status_code, answer.text[:200])
    assert _fields(answer) == ["cursor"]


def test_the_cursors_the_api_issues_still_page(steward_api, monkeypatch):
    monkeypatch.setattr(CandidatePagination, "page_size", 1)
    first, second, third = (Individual.objects.create() for _ in range(3))
    MatchCandidate.objects.create(left=first, right=second, rule="test")
    MatchCandidate.objects.create(left=first, right=third, rule="test")
    page = steward_api.get(f"{steward_api.base_url}/api/v1/match-candidates", timeout=10).json()
    assert [c["right"] for c in page["results"]] == [second.master_id]
    page = steward_api.get(page["next"], timeout=10).json()
    assert [c["right"] for c in page["results"]] == [third.master_id]
    back = steward_api.get(page["previous"], timeout=10).json()
    assert [c["right"] for c in back["results"]] == [second.master_id]


# -- admin lists -------------------------------------------------------------------------------------

# What a user who may view a list could put in its query string, per kind of field.
_DATE_LOOKUPS = [
    {"{f}__year": "0"},
    {"{f}__year": "-1"},
    {"{f}__year": HUGE},
    {"{f}__year": "9999"},  # a date hierarchy's year ends with the next one
    {"{f}__year": "2024", "{f}__month": HUGE},
    {"{f}__iso_year": "0"},
    {"{f}__year__gt": HUGE},
    {"{f}__range": "a"},
]
_TEXT_LOOKUPS = [{"{f}__regex": "("}, {"{f}__iregex": "[z-a]"}, {"{f}__trigram_similar": "x"}, {"{f}__range": "a"}]


def _odd_queries(model: type[models.Model]) -> list[dict[str, str]]:
    fields = [f for f in model._meta.concrete_fields if not f.is_relation]
    queries: list[dict[str, str]] = []
    for kind, lookups in ((models.DateField, _DATE_LOOKUPS), ((models.CharField, models.TextField), _TEXT_LOOKUPS)):
        field = next((f for f in fields if isinstance(f, kind)), None)
        if field is not None:
            queries += [{k.format(f=field.name): v for k, v in lookup.items()} for lookup in lookups]
    return queries


def test_no_admin_list_answers_an_odd_filter_with_a_500(client):
    client.force_login(get_user_model().objects.create_superuser("root", "", "pw-for-tests"))
    client.raise_request_exception = False
    failures = []
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for query in _odd_queries(model):
            answer = client.get(url, query)
            if answer.status_code >= 500:
                failures.append((url, query, answer.status_code))
    assert not failures, f"{len(failures)} odd filters answered with a 500, e.g. {failures[:5]}"


def test_an_odd_filter_is_a_400_naming_the_parameter(client):
    client.force_login(get_user_model().objects.create_superuser("root", "", "pw-for-tests"))
    url = "/admin/customers/crossreference/"
    answer = client.get(url, {"first_seen_at__year": "0", "system": "POS"})
    assert answer.status_code == 400
    assert answer["Content-Type"].startswith("application/problem+json")
    assert [e["field"] for e in answer.json()["errors"]] == ["query.first_seen_at__year", "query.system"]
    # The same list with filters it can run still renders.
    assert client.get(url, {"first_seen_at__year": "2026", "system": "POS"}).status_code == 200


# -- intake parses what the resolver will read -----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("firstName", "1e101"),
        ("firstName", "1e16"),  # 1e+16 as sent, 10000000000000000 as jsonb gives it back
        ("firstName", "1.5"),
        ("firstName", "true"),
        ("firstName", "{}"),
        ("gender", "1e308"),
        ("lastName", "1" * 101),  # an integer of 101 digits: too long either way
        ("firstName", json.dumps("A" * 100 + "\x00")),  # NUL is stored as U+FFFD: 101 characters
        ("id", json.dumps("p" * 256)),
        ("id", "1e20"),
    ],
)
def test_intake_refuses_what_the_resolver_would_dead_letter(live_server, field, literal):
    pos = _key_session(live_server, "pos", ["POS"])
    event = _event("e1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com"))
    event["individual"][field] = "PLACEHOLDER"
    body = json.dumps({"events": [event]}).replace('"PLACEHOLDER"', literal)
    answer = pos.post(
        f"{pos.base_url}/api/v1/events", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    run_queued()
    assert answer.status_code == 400, (answer.status_code, InboundEvent.objects.values_list("status", "reason")[:1])
    assert _fields(answer) == [f"events[0].individual.{field}"]
    assert not InboundEvent.objects.exclude(status="rejected").exists()


@pytest.mark.parametrize(("field", "literal"), [("postalCodeText", "12345"), ("firstName", json.dumps("Ann\x00"))])
def test_what_intake_accepts_the_resolver_applies(live_server, field, literal):
    pos = _key_session(live_server, "pos", ["POS"])
    individual = cim("Ann", "Lee", email="ann@example.com")
    individual["contactPoints"].append({"contactPointType": "ContactPointAddress", "cityName": "Leeds"})
    target = individual["contactPoints"][-1] if field == "postalCodeText" else individual
    target[field] = "PLACEHOLDER"
    body = json.dumps({"events": [_event("e1", "POS", "p-1", individual)]}).replace('"PLACEHOLDER"', literal)
    answer = pos.post(
        f"{pos.base_url}/api/v1/events", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    run_queued()
    assert InboundEvent.objects.get().status == "synced"


def test_the_journey_refuses_a_mobile_number_the_resolver_would_dead_letter(journey):
    answer = journey.execute(subscriber(MobileNumber="call me maybe"))
    run_queued()
    assert answer.status_code == 400, (answer.status_code, InboundEvent.objects.values_list("status", "reason")[:1])
    assert _fields(answer) == ["inArguments.MobileNumber"]
    assert not InboundEvent.objects.exclude(status="rejected").exists()


def test_the_journey_still_takes_numbers_for_text_in_arguments(journey):
    args = subscriber() | {"SubscriberId": 501, "PostalCode": 12345}
    assert journey.execute(args).status_code == 200
    run_queued()
    assert InboundEvent.objects.get().status == "synced"
    assert Individual.objects.get().contact_points.filter(postal_code_text="12345").exists()
