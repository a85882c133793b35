"""Subscriber statuses ENS never sends (UI, import, API; Held, Bounced) reach the golden record.

Over real HTTP: the journey activity creates the golden records on the live server, the sandbox
plays Marketing Cloud's All Subscribers and answers the SOAP Retrieve (``ModifiedDate``
greaterThan a ``DateValue``, ``ContinueRequest`` paging) as a tenant does, dates in its system
time (UTC-6, no offset).
"""

from __future__ import annotations

import datetime as dt
import io

import pytest
import requests
from defusedxml import ElementTree as SafeET
from django.core.management import call_command
from django_q.models import Schedule

from customers.models import ContactPoint, CrossReference, HistoryEntry, Individual
from integrations.marketing_cloud import subscriber_soap
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.models import SubscriberStatusSync, UnsubscribeWriteback
from integrations.marketing_cloud.status_sync import STATUS_SCHEDULE_NAME, STATUS_TASK, read_statuses
from integrations.marketing_cloud.subscriber_soap import SubscriberSoap
from integrations.transport import TransportError
from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)

T0 = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)
PARTNER = "{http://exacttarget.com/wsdl/partnerAPI}"


def person(journey, key: str = "SK-1001", email: str = "ada.lovelace@example.com") -> Individual:
    journey.execute(subscriber(key=key, email=email))
    run_queued()
    return CrossReference.objects.get(system="MARKETING_CLOUD", external_id=key).individual


def consent_history(individual: Individual) -> list[HistoryEntry]:
    return list(HistoryEntry.objects.filter(individual=individual, action="consent").order_by("id"))


def test_an_unsubscribe_made_in_marketing_cloud_reaches_the_golden_record_once(journey, sandbox):
    ada = person(journey)
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Unsubscribed", modified=T0)
    run = read_statuses()
    assert (run.status, run.read, run.applied, run.unknown) == ("succeeded", 1, 1, 0)
    ada.refresh_from_db()
    assert ada.do_not_market_since == T0 and ada.consent_source == "MARKETING_CLOUD"
    [entry] = consent_history(ada)
    assert entry.object_type == "CrossReference" and entry.actor == "mc-status-read"
    assert entry.before["source_status"] == "Active" and entry.before["do_not_market_since"] is None
    assert entry.after["source_status"] == "Unsubscribed" and entry.after["consent_source"] == "MARKETING_CLOUD"
    assert "opted out of all marketing" in entry.after["reason"]
    xref = CrossReference.objects.get(external_id="SK-1001")
    assert xref.source_status == "Unsubscribed" and xref.source_status_at == T0
    state = SubscriberStatusSync.objects.get()
    assert state.last_status == "succeeded" and state.watermark == T0 and state.last_applied == 1
    # The same read again (the overlap makes every run re-read the last 15 minutes): nothing new.
    again = read_statuses()
    assert (again.read, again.applied, again.unchanged) == (1, 0, 1)
    assert len(consent_history(ada)) == 1
    # It came from Marketing Cloud: it is not sent back there.
    assert not UnsubscribeWriteback.objects.exists()


def test_the_filter_is_a_date_value_in_marketing_cloud_time_less_the_overlap(journey, sandbox):
    person(journey)
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Bounced", modified=T0)
    read_statuses()
    body = subscriber_soap.retrieve_request("t", modified_after=SubscriberStatusSync.objects.get().watermark)
    part = SafeET.fromstring(body).find(f".//{PARTNER}Filter")
    # 15:00 UTC is 09:00 in Marketing Cloud's system time (UTC-6), written without an offset.
    assert part.findtext(f"{PARTNER}Property") == "ModifiedDate"
    assert part.findtext(f"{PARTNER}SimpleOperator") == "greaterThan"
    assert part.findtext(f"{PARTNER}DateValue") == "2026-11-20T09:00:00"
    older = T0 - dt.timedelta(hours=1)  # changed before the watermark less the overlap: not read
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Unsubscribed", modified=older)
    assert read_statuses().read == 0


def test_an_older_status_never_overwrites_a_newer_one(journey, sandbox):
    ada = person(journey)
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Held", modified=T0)
    read_statuses()
    # A change stamped five minutes earlier arrives late (within the overlap, so it is read).
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Unsubscribed", modified=T0 - dt.timedelta(minutes=5))
    run = read_statuses()
    assert (run.read, run.applied, run.unchanged) == (1, 0, 1)
    ada.refresh_from_db()
    assert ada.do_not_market_since == T0  # from Held, not moved back by the late Unsubscribed
    assert CrossReference.objects.get(external_id="SK-1001").source_status == "Held"


def test_held_marks_the_address_undeliverable_and_not_marketable_and_active_clears_only_the_mark(journey, sandbox):
    ada = person(journey)
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Held", modified=T0)
    read_statuses()
    ada.refresh_from_db()
    email = ContactPoint.objects.get(individual=ada, kind="ContactPointEmail")
    # Held reads as a journey call with Status Held does: do-not-market from then.
    assert email.undeliverable_since == T0 and ada.do_not_market_since == T0
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Bounced", modified=T0 + dt.timedelta(minutes=1))
    read_statuses()
    email.refresh_from_db()
    assert email.latest_bounce_at == T0 + dt.timedelta(minutes=1) and email.undeliverable_since == T0
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Active", modified=T0 + dt.timedelta(minutes=2))
    read_statuses()
    email.refresh_from_db()
    ada.refresh_from_db()
    assert email.undeliverable_since is None and ada.do_not_market_since == T0  # Active lifts no opt-out
    reasons = [h.after["reason"] for h in consent_history(ada)]
    assert reasons == [
        "MARKETING_CLOUD status Held: the email address takes no mail; opted out of all marketing",
        "MARKETING_CLOUD status Bounced: the email address bounced",
        "MARKETING_CLOUD status Active: the email address takes mail again",
    ]


def test_unknown_subscribers_are_counted_and_skipped(journey, sandbox):
    person(journey)
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Unsubscribed", modified=T0)
    sandbox.put_subscriber("NOBODY-1", "nobody@example.com", "Unsubscribed", modified=T0)
    sandbox.put_subscriber("NOBODY-2", "nobody2@example.com", "Held", modified=T0)
    run = read_statuses()
    assert (run.read, run.applied, run.unknown) == (3, 1, 2)
    assert SubscriberStatusSync.objects.get().last_unknown == 2
    assert Individual.objects.count() == 1


def test_every_page_is_read_through_continue_request(journey, sandbox):
    people = [person(journey, key=f"SK-{i}", email=f"p{i}@example.com") for i in range(5)]
    for i in range(5):
        sandbox.put_subscriber(f"SK-{i}", f"p{i}@example.com", "Unsubscribed", modified=T0 + dt.timedelta(seconds=i))
    sandbox.configure(soap_page_size=2)
    before = sandbox.count("POST", "/Service.asmx")
    run = read_statuses()
    assert (run.pages, run.read, run.applied) == (3, 5, 5)
    assert sandbox.count("POST", "/Service.asmx") - before == 3
    assert SubscriberStatusSync.objects.get().watermark == T0 + dt.timedelta(seconds=4)
    for individual in people:
        individual.refresh_from_db()
        assert individual.do_not_market_since is not None


def test_a_server_fault_fails_the_run_keeps_the_watermark_and_the_rerun_applies(journey, sandbox):
    ada = person(journey)
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Unsubscribed", modified=T0)
    sandbox.inject("500", path_contains="/Service.asmx")
    run = read_statuses()
    assert run.status == "failed" and "soap:Server" in run.error
    state = SubscriberStatusSync.objects.get()
    assert state.last_status == "failed" and state.watermark is None and "soap:Server" in state.last_error
    assert read_statuses().applied == 1
    ada.refresh_from_db()
    assert ada.do_not_market_since == T0


def test_soap_faults_are_transient_or_permanent_as_the_transport_says(sandbox):
    soap = SubscriberSoap(MarketingCloudClient.from_settings())
    sandbox.inject("500", path_contains="/Service.asmx")
    with pytest.raises(TransportError) as throttled:
        soap.retrieve_changed(None)
    assert not throttled.value.permanent and throttled.value.http_status == 500
    sandbox.inject("400", path_contains="/Service.asmx")
    with pytest.raises(TransportError) as refused:
        soap.retrieve_changed(None)
    assert refused.value.permanent and refused.value.error_code == "soap:Client"
    # An ended session ("Login Failed") gets a new token and the call goes through.
    sandbox.inject("401", path_contains="/Service.asmx")
    assert soap.retrieve_changed(None).results == []


def test_the_sandbox_refuses_a_property_a_subscriber_has_not(sandbox, monkeypatch):
    monkeypatch.setattr(subscriber_soap, "SUBSCRIBER_PROPERTIES", [*subscriber_soap.SUBSCRIBER_PROPERTIES, "Bogus"])
    with pytest.raises(TransportError) as refused:
        SubscriberSoap(MarketingCloudClient.from_settings()).retrieve_changed(None)
    assert refused.value.permanent
    assert "Bogus do not match with the fields of Subscriber retrieve" in refused.value.message


def test_the_sandbox_answers_the_real_envelope_with_system_time_dates(sandbox):
    sandbox.put_subscriber("SK-1", "a@example.com", "Unsubscribed", modified=T0)
    client = MarketingCloudClient.from_settings()
    token = client.get_token().access_token
    answer = requests.post(
        f"{sandbox.url}/Service.asmx",
        data=subscriber_soap.retrieve_request(token, modified_after=T0 - dt.timedelta(minutes=1)),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "Retrieve"},
        timeout=5,
    )
    text = answer.text
    assert answer.status_code == 200 and "<OverallStatus>OK</OverallStatus>" in text
    assert 'xsi:type="Subscriber"' in text and "<ModifiedDate>2026-11-20T09:00:00.000</ModifiedDate>" in text


def test_the_schedule_and_mc_reconcile_run_it_and_the_admin_shows_it(journey, sandbox, admin_client):
    assert Schedule.objects.get(name=STATUS_SCHEDULE_NAME).func == STATUS_TASK
    person(journey)
    sandbox.put_subscriber("SK-1001", "ada.lovelace@example.com", "Unsubscribed", modified=T0)
    out = io.StringIO()
    call_command("mc_reconcile", stdout=out)
    assert "All Subscribers: read 1 subscribers in 1 page(s)" in out.getvalue()
    assert "applied 1, unchanged 0, unknown 0" in out.getvalue()
    page = admin_client.get("/admin/marketing_cloud/subscriberstatussync/")
    assert page.status_code == 200 and "succeeded" in page.content.decode()
    state = SubscriberStatusSync.objects.get()
    admin_client.post(
        "/admin/marketing_cloud/subscriberstatussync/", {"action": "run_now", "_selected_action": [state.pk]}
    )
    assert [func for func, _ in run_queued()] == [STATUS_TASK]
