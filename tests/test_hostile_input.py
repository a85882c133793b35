"""Hostile and odd input: NUL characters, Unicode twins, injection-shaped strings."""

from __future__ import annotations

import json
import unicodedata

import pytest

from customers.models import Individual
from integrations.models import InboundEvent
from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)


def test_nul_characters_do_not_crash_the_journey_endpoint(journey, sandbox):
    response = journey.execute(subscriber(FirstName="Ada\u0000", LastName="Love\x00lace"))
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        run_queued()
        assert Individual.objects.get().first_name == "Ada"


def test_nul_characters_do_not_crash_the_events_api(api):
    event = {
        "id": "e\u00001",
        "source": "POS",
        "occurredAt": "2026-11-20T10:00:00Z",
        "individual": {
            "id": "c1",
            "firstName": "Gr\u0000ace",
            "contactPoints": [{"contactPointType": "ContactPointEmail", "emailAddress": "g@example.com"}],
        },
    }
    response = api.post(
        f"{api.base_url}/api/v1/events",
        data=json.dumps({"events": [event]}),
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code in (200, 400), response.text
    run_queued()


def test_nfc_and_nfd_spellings_of_one_email_are_one_person(journey, sandbox):
    nfc = unicodedata.normalize("NFC", "zoë@example.com")
    nfd = unicodedata.normalize("NFD", "zoë@example.com")
    assert nfc != nfd
    journey.execute(subscriber(key="A", email=nfc))
    journey.execute(subscriber(key="B", email=nfd))
    run_queued()
    assert Individual.objects.count() == 1


@pytest.mark.parametrize("value", ["' OR 1=1 --", "%_%", "x'; DROP TABLE customers_individual; --", "\\"])
def test_injection_shaped_strings_are_just_data(api, journey, sandbox, admin_client, value):
    journey.execute(subscriber(key=value, email="inj@example.com", LastName=value))
    run_queued()
    found = api.get(
        f"{api.base_url}/api/v1/individuals",
        params={"externalIdType": "MARKETING_CLOUD", "externalId": value},
        timeout=10,
    ).json()
    assert found["count"] == 1 and found["results"][0]["lastName"] == value
    assert api.get(
        f"{api.base_url}/api/v1/individuals",
        params={"externalIdType": "MARKETING_CLOUD", "externalId": "%"},
        timeout=10,
    ).json()["count"] == (value == "%")
    assert admin_client.get("/admin/customers/individual/", {"q": value}).status_code == 200
    assert InboundEvent.objects.count() == 1
