"""Opt-outs recorded elsewhere reach Marketing Cloud: Subscriber Status Unsubscribed, batched and retried.

Over real HTTP: golden records come in through the journey activity and the events API on the
live server; the steward acts in the admin; the sandbox answers the SOAP Update of Subscriber
objects as a tenant does (one result per object, faults for what it cannot read).
"""

from __future__ import annotations

import datetime as dt

import pytest

from customers.models import CrossReference, HistoryEntry, Individual
from integrations.marketing_cloud.models import UnsubscribeWriteback
from integrations.marketing_cloud.status_sync import read_statuses
from integrations.marketing_cloud.unsubscribe import FLUSH_TASK, request_unsubscribes
from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)


def person(journey, sandbox, key: str = "SK-1001", email: str = "ada.lovelace@example.com") -> Individual:
    sandbox.put_subscriber(key, email, "Active", modified=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    journey.execute(subscriber(key=key, email=email))
    run_queued()
    return CrossReference.objects.get(system="MARKETING_CLOUD", external_id=key).individual


def steward_opts_out(admin_client, *individuals: Individual) -> None:
    response = admin_client.post(
        "/admin/customers/individual/",
        {"action": "opt_out", "_selected_action": [i.pk for i in individuals]},
    )
    assert response.status_code == 302


def test_a_stewards_opt_out_unsubscribes_the_subscriber(journey, sandbox, admin_client):
    ada = person(journey, sandbox)
    steward_opts_out(admin_client, ada)
    row = UnsubscribeWriteback.objects.get()
    assert row.state == "pending" and row.consent_source == "STEWARD" and row.attempts == 0
    opted = HistoryEntry.objects.get(individual=ada, action="consent")
    assert opted.actor_user is not None and opted.after["consent_source"] == "STEWARD"
    done = run_queued()
    assert (FLUSH_TASK, "1 written, 0 failed, 0 deferred") in done
    assert sandbox.subscribers()["SK-1001"]["status"] == "Unsubscribed"
    row.refresh_from_db()
    assert row.state == "written" and row.attempts == 1 and row.written_at and row.last_error == ""
    entry = HistoryEntry.objects.get(individual=ada, action="writeback", after__status="Unsubscribed")
    assert entry.after == {"system": "MARKETING_CLOUD", "external_id": "SK-1001", "status": "Unsubscribed"}
    # The record's page shows it.
    page = admin_client.get(f"/admin/customers/individual/{ada.pk}/change/").content.decode()
    assert "mc-unsubscribes" in page and "Written" in page
    # Marketing Cloud now reports it Unsubscribed; reading that back sends nothing again.
    read_statuses()
    assert UnsubscribeWriteback.objects.get().state == "written"
    assert not [task for task, _ in run_queued() if task == FLUSH_TASK]


def test_many_opt_outs_go_in_one_update_call(journey, sandbox, admin_client):
    people = [person(journey, sandbox, key=f"SK-{i}", email=f"p{i}@example.com") for i in range(3)]
    before = sandbox.count("POST", "/Service.asmx")
    steward_opts_out(admin_client, *people)
    run_queued()
    assert sandbox.count("POST", "/Service.asmx") - before == 1
    assert {sandbox.subscribers()[f"SK-{i}"]["status"] for i in range(3)} == {"Unsubscribed"}
    assert set(UnsubscribeWriteback.objects.values_list("state", flat=True)) == {"written"}


def test_another_systems_opt_out_is_sent(journey, sandbox, api):
    ada = person(journey, sandbox)
    event = {
        "id": "b2c-1",
        "source": "B2C_COMMERCE",
        "occurredAt": "2026-11-20T10:00:00Z",
        "individual": {
            "id": "B2C-77",
            "partyType": "Individual",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "doNotMarketFromUpdateDate": "2026-11-20T10:00:00Z",
            "contactPoints": [{"contactPointType": "ContactPointEmail", "emailAddress": "ada.lovelace@example.com"}],
            "externalIds": [{"id": "", "externalId": ada.master_id, "externalIdType": "MDM"}],
        },
    }
    assert api.post(f"{api.base_url}/api/v1/events", json={"events": [event]}, timeout=10).status_code == 200
    run_queued()
    ada.refresh_from_db()
    assert ada.consent_source == "B2C_COMMERCE"
    row = UnsubscribeWriteback.objects.get()
    assert row.consent_source == "B2C_COMMERCE" and row.state == "written"
    assert sandbox.subscribers()["SK-1001"]["status"] == "Unsubscribed"


def test_an_unsubscribe_from_marketing_cloud_is_not_sent_back(journey, sandbox):
    person(journey, sandbox)
    # A journey call saying the subscriber is Unsubscribed, and the status read saying so.
    journey.execute(subscriber(Status="Unsubscribed", ModifiedDate="2026-11-21T00:00:00Z"))
    run_queued()
    assert Individual.objects.get().consent_source == "MARKETING_CLOUD"
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Unsubscribed")
    read_statuses()
    run_queued()
    assert not UnsubscribeWriteback.objects.exists()
    assert sandbox.count("POST", "/Service.asmx") == 1  # the status read only


def test_an_opt_out_whose_source_is_marketing_cloud_is_never_requested(journey, sandbox):
    """Whatever Marketing Cloud told the hub (journey, ENS, status read) it knows already."""
    ada = person(journey, sandbox)
    CrossReference.objects.filter(individual=ada).update(source_status="")  # no status read yet
    since = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    for source in ("MARKETING_CLOUD", "marketing_cloud_ens"):
        assert request_unsubscribes([(ada.pk, since, source)]) == 0
    assert not UnsubscribeWriteback.objects.exists()
    assert request_unsubscribes([(ada.pk, since, "POS")]) == 1


def test_a_server_fault_is_retried_with_backoff(journey, sandbox, admin_client):
    ada = person(journey, sandbox)
    sandbox.inject("500", path_contains="/Service.asmx")
    steward_opts_out(admin_client, ada)
    first = run_queued(limit=1)
    assert first == [(FLUSH_TASK, "0 written, 0 failed, 1 deferred")]
    row = UnsubscribeWriteback.objects.get()
    assert row.state == "pending" and row.attempts == 1 and "soap:Server" in row.last_error
    assert row.due_at is not None
    page = admin_client.get("/admin/marketing_cloud/unsubscribewriteback/").content.decode()
    assert "Pending" in page and "soap:Server" in page
    run_queued()
    row.refresh_from_db()
    assert row.state == "written" and row.attempts == 2 and row.last_error == ""
    assert sandbox.subscribers()["SK-1001"]["status"] == "Unsubscribed"


def test_a_refused_subscriber_fails_alone_and_a_steward_can_retry(journey, sandbox, admin_client):
    ada = person(journey, sandbox)
    grace = person(journey, sandbox, key="SK-2002", email="grace@example.com")
    with sandbox._lock:  # the subscriber was deleted in Marketing Cloud meanwhile
        del sandbox._subscribers[""]["SK-2002"]
    steward_opts_out(admin_client, ada, grace)
    run_queued()
    rows = {r.cross_reference.external_id: r for r in UnsubscribeWriteback.objects.select_related("cross_reference")}
    assert rows["SK-1001"].state == "written"
    failed = rows["SK-2002"]
    assert failed.state == "failed" and failed.error_code == "12002" and "Subscriber not found" in failed.last_error
    page = admin_client.get("/admin/marketing_cloud/unsubscribewriteback/?state__exact=failed").content.decode()
    assert "Subscriber not found" in page
    sandbox.put_subscriber("SK-2002", "grace@example.com", "Active")
    admin_client.post(
        "/admin/marketing_cloud/unsubscribewriteback/", {"action": "retry_now", "_selected_action": [failed.pk]}
    )
    run_queued()
    failed.refresh_from_db()
    assert failed.state == "written" and sandbox.subscribers()["SK-2002"]["status"] == "Unsubscribed"


def test_a_client_fault_fails_for_good(journey, sandbox, admin_client):
    ada = person(journey, sandbox)
    sandbox.inject("400", path_contains="/Service.asmx")
    steward_opts_out(admin_client, ada)
    run_queued()
    row = UnsubscribeWriteback.objects.get()
    assert row.state == "failed" and row.attempts == 1 and "permanent failure" in row.last_error


def test_the_sandbox_refuses_what_an_update_of_a_subscriber_cannot_carry(sandbox):
    import requests

    from integrations.marketing_cloud.client import MarketingCloudClient

    token = MarketingCloudClient.from_settings().get_token().access_token
    body = (
        '<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><s:Header>'
        f'<fueloauth xmlns="http://exacttarget.com">{token}</fueloauth></s:Header><s:Body>'
        '<UpdateRequest xmlns="http://exacttarget.com/wsdl/partnerAPI"><Options/>'
        '<Objects xsi:type="Subscriber"><SubscriberKey>SK-1</SubscriberKey><Status>Gone</Status></Objects>'
        "</UpdateRequest></s:Body></s:Envelope>"
    )
    answer = requests.post(
        f"{sandbox.url}/Service.asmx", data=body.encode(), headers={"SOAPAction": "Update"}, timeout=5
    )
    assert answer.status_code == 500 and "<faultcode>soap:Client</faultcode>" in answer.text
    assert "not a valid SubscriberStatus" in answer.text
