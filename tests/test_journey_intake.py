"""Use case 1c end to end: a signed Journey Builder call -> golden record -> master ID in Marketing Cloud."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import jwt
import pytest

from customers.models import ContactPoint, CrossReference, HistoryEntry, Individual
from integrations.choices import EventStatus, RunStatus
from integrations.marketing_cloud.activity import in_argument_bindings
from integrations.marketing_cloud.mapping import IN_ARGUMENTS
from integrations.models import InboundEvent, SyncRun
from sandboxes.marketing_cloud.journey import Journey, entry_source_bindings, sign_execute
from tests.conftest import JWT_SECRET, subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db(transaction=True)
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "journey_builder.json").read_text())
EVENT_KEY = FIXTURE["requested_trigger_event_definition"]["eventDefinitionKey"]


def test_new_subscriber_gets_master_id_cross_reference_and_write_back(journey, sandbox):
    response = journey.execute(subscriber())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted" and body["duplicate"] is False
    event = InboundEvent.objects.get(pk=body["eventId"])
    assert event.status == EventStatus.QUEUED
    assert bytes(event.raw_body).count(b".") == 2  # the raw JWT, as received
    assert [t["func"] for t in queued_tasks()] == ["integrations.resolver.resolve_ready_events"]

    run_queued()

    individual = Individual.objects.get()
    assert individual.first_name == "Ada" and individual.birth_date == dt.date(1985, 12, 10)
    xref = CrossReference.objects.get()
    assert (xref.system, xref.external_id, xref.individual_id) == ("MARKETING_CLOUD", "SK-1001", individual.pk)
    assert xref.writeback_state == "written" and xref.source_master_id == individual.master_id
    assert xref.source_payload["firstName"] == "Ada"
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == individual.master_id
    assert set(ContactPoint.objects.values_list("kind", flat=True)) == {
        "ContactPointEmail",
        "ContactPointPhone",
        "ContactPointAddress",
    }

    event.refresh_from_db()
    assert event.status == EventStatus.SYNCED and event.master_id == individual.master_id
    run = SyncRun.objects.get(event=event)
    assert run.status == RunStatus.SUCCEEDED
    steps = list(run.steps.values_list("name", "outcome"))
    assert steps == [
        ("find golden record", "ok"),
        ("upsert golden record", "ok"),
        ("upsert cross reference", "ok"),
        ("notify downstream systems", "skipped"),  # change recorded; no targets configured
        ("write back master ID", "ok"),  # queued
        ("write back master ID", "ok"),  # written
    ]
    assert all(s.finished_at >= s.started_at for s in run.steps.all())
    assert set(HistoryEntry.objects.values_list("action", flat=True)) == {"create", "link", "writeback"}
    assert sandbox.count("POST", "/v2/token") == 1


def test_subscriber_arriving_with_its_master_id_is_not_written_back(journey, sandbox):
    journey.execute(subscriber())
    run_queued()
    master_id = Individual.objects.get().master_id
    puts_before = sandbox.count("PUT", "/hub/v1/dataevents")

    response = journey.execute(
        subscriber(GlobalPartyId=master_id, FirstName="Augusta", ModifiedDate="2026-11-02T09:00:00Z")
    )
    assert response.status_code == 200
    run_queued()

    assert Individual.objects.count() == 1
    assert Individual.objects.get().first_name == "Augusta"
    assert sandbox.count("PUT", "/hub/v1/dataevents") == puts_before
    run = SyncRun.objects.order_by("-id").first()
    assert run.match_rule == "master_id" and run.status == RunStatus.SUCCEEDED
    assert run.steps.get(name="write back master ID").outcome == "skipped"


def test_event_carrying_another_master_id_gets_the_right_one_written(journey, sandbox):
    journey.execute(subscriber(GlobalPartyId="not-a-known-master-id"))
    run_queued()
    individual = Individual.objects.get()
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == individual.master_id


def test_duplicate_delivery_changes_nothing(journey, sandbox):
    args = subscriber()
    kwargs = {"definition_instance_id": "def-1", "activity_instance_id": "act-1"}
    first = journey.execute(args, **kwargs)
    second = journey.execute(args, **kwargs)
    assert first.status_code == second.status_code == 200
    assert second.json() == {"status": "accepted", "eventId": first.json()["eventId"], "duplicate": True}
    assert len(queued_tasks()) == 1
    run_queued()
    third = journey.execute(args, **kwargs)
    assert third.json()["duplicate"] is True
    assert queued_tasks() == []
    assert InboundEvent.objects.count() == 1 and Individual.objects.count() == 1
    assert SyncRun.objects.count() == 1 and sandbox.count("PUT", "/hub/v1/dataevents") == 1


def test_same_email_under_a_new_subscriber_key_joins_the_golden_record(journey, sandbox):
    journey.execute(subscriber())
    journey.execute(subscriber(key="SK-2002", email="  Ada.Lovelace@EXAMPLE.com "))
    run_queued()
    assert Individual.objects.count() == 1
    assert CrossReference.objects.count() == 2
    master_id = Individual.objects.get().master_id
    rows = sandbox.rows("Individual")
    assert rows["SK-1001"]["GlobalPartyId"] == rows["SK-2002"]["GlobalPartyId"] == master_id


def test_older_change_arriving_late_is_superseded(journey, sandbox):
    journey.execute(subscriber(FirstName="New", ModifiedDate="2026-11-05T00:00:00Z"))
    run_queued()
    response = journey.execute(subscriber(FirstName="Old", ModifiedDate="2026-11-01T00:00:00Z"))
    run_queued()
    assert Individual.objects.get().first_name == "New"
    assert InboundEvent.objects.get(pk=response.json()["eventId"]).status == EventStatus.SUPERSEDED


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not-a-jwt", "garbage"),
        (jwt.encode({"inArguments": [{"SubscriberKey": "x"}]}, "wrong-secret", algorithm="HS256").encode(), "bad sig"),
        (jwt.encode({"inArguments": [], "exp": 1}, JWT_SECRET, algorithm="HS256").encode(), "expired"),
        (jwt.encode({"inArguments": []}, JWT_SECRET + "x" * 40, algorithm="HS512").encode(), "other alg"),
        (jwt.encode({"inArguments": []}, None, algorithm="none").encode(), "unsigned"),
    ],
)
def test_bad_jwt_is_refused_and_nothing_stored(journey, body, reason):
    response = journey.post_raw(body)
    assert response.status_code == 401, reason
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert InboundEvent.objects.count() == 0
    assert queued_tasks() == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"SubscriberKey": None}, "inArguments.SubscriberKey"),
        ({"EmailAddress": "not-an-email"}, "inArguments.EmailAddress"),
        ({"BirthDate": "1985-13-45"}, "inArguments.BirthDate"),
        ({"ModifiedDate": "yesterday"}, "inArguments.ModifiedDate"),
        ({"Status": "Maybe"}, "inArguments.Status"),
    ],
)
def test_bad_data_is_refused_naming_the_field_and_kept_as_rejected(journey, change, field):
    args = subscriber()
    for key, value in change.items():
        if value is None:
            args.pop(key)
        else:
            args[key] = value
    response = journey.execute(args)
    assert response.status_code == 400
    problem = response.json()
    assert problem["errors"][0]["field"] == field
    event = InboundEvent.objects.get()
    assert event.status == EventStatus.REJECTED and field in event.reason
    assert event.pk == problem["eventId"]
    assert queued_tasks() == [] and Individual.objects.count() == 0


def test_oversize_body_is_refused_before_parsing(journey):
    response = journey.post_raw(b"x" * (300 * 1024))
    assert response.status_code == 413
    assert InboundEvent.objects.count() == 0


def test_wrong_content_type_is_refused(journey):
    response = journey.post_raw(b"{}", content_type="application/json")
    assert response.status_code == 415
    assert InboundEvent.objects.count() == 0


def test_both_binding_styles_arrive_resolved_and_are_accepted(journey, sandbox):
    # The same subscriber, once through a journey bound to its entry event (what the activity's page
    # saves), once through one bound to a linked attribute set (config.json with MC_ATTRIBUTE_SET).
    row = subscriber()
    by_event = Journey(EVENT_KEY, entry_source_bindings(EVENT_KEY, IN_ARGUMENTS))
    by_attribute_set = Journey(
        EVENT_KEY, in_argument_bindings("Individual"), attribute_sets={"Individual": {row["SubscriberKey"]: row}}
    )
    cims = []
    for played in (by_event, by_attribute_set):
        played.publish()
        response = played.send(journey.url, JWT_SECRET, row["SubscriberKey"], row)
        assert response.status_code == 200, response.text
        cims.append(InboundEvent.objects.get(pk=response.json()["eventId"]).individual_cim)
    assert cims[0] == cims[1] and cims[0]["firstName"] == "Ada" and cims[0]["birthDate"] == "1985-12-10"


def test_in_argument_names_are_taken_without_regard_to_case(journey, sandbox):
    # An activity saved with the data extension's own spelling of the column names.
    args = {"subscriberkey": "SK-1001", "EMAILADDRESS": "ada.lovelace@example.com", "firstname": "Ada"}
    response = journey.execute(args)
    assert response.status_code == 200, response.text
    cim = InboundEvent.objects.get(pk=response.json()["eventId"]).individual_cim
    assert cim["firstName"] == "Ada" and cim["externalIds"][0]["externalId"] == "SK-1001"
    # Refusals name our field, and keep the subscriber key whatever its spelling.
    refused = journey.execute({"subscriberKEY": "SK-1002", "emailaddress": "not-an-email"})
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "inArguments.EmailAddress"
    assert InboundEvent.objects.get(pk=refused.json()["eventId"]).external_id == "SK-1002"


def test_the_fixtures_execute_body_is_accepted(journey, sandbox):
    body = dict(FIXTURE["execute_body"], iat=int(time.time()), exp=int(time.time()) + 300)
    response = journey.post_raw(sign_execute(body, JWT_SECRET))
    assert response.status_code == 200, response.text
