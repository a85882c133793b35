"""ENS unsubscribes reach the right person, per list, and are taken however the key signs them.

Over real HTTP: the journey activity and the ENS callback on the live server, the sandbox
playing Marketing Cloud (it signs and sends the batches), the read API and the record page.
The events are Salesforce's documented shapes (tests/fixtures/ens_events.json).
"""

from __future__ import annotations

import copy
import datetime as dt
import hmac
import importlib
import io
import json
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.db.models import F

from customers.models import CommunicationSubscriptionConsent, CrossReference, HistoryEntry, Individual
from customers.stewardship import merge_individuals, unmerge_cross_reference
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud import ens as hub_ens
from integrations.marketing_cloud.models import EnsCallback, EnsNotification
from integrations.models import InboundEvent
from sandboxes.marketing_cloud.ens import (
    ALL_SUBSCRIBERS_LIST_ID,
    email_unsubscribe_event,
    encode_batch,
    sign_ens,
)
from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "ens_events.json").read_text())
# The documented unsubscribe: SubscriberID 178363503, from list 69238.
DOCUMENTED = FIXTURES["email_unsubscribe"]
SUBSCRIBER_ID = DOCUMENTED["composite"]["subscriberId"]


@pytest.fixture
def ens_url(live_server):
    return f"{live_server.url}/api/v1/marketing-cloud/ens"


@pytest.fixture
def registered(ens_url, sandbox):
    call_command("mc_ens_register", ens_url, "--allow-insecure", stdout=io.StringIO())
    return EnsCallback.objects.get()


def documented_unsubscribe(*, to: str, list_id: str = ALL_SUBSCRIBERS_LIST_ID) -> dict:
    """The documented event, sent to ``to`` from ``list_id`` (this tenant's All Subscribers by default)."""
    event = copy.deepcopy(DOCUMENTED)
    event["info"]["to"] = to
    event["info"]["domain"] = to.rpartition("@")[2]
    event["composite"]["listId"] = list_id
    event["compositeId"] = f"1722201.{list_id}.15607.{SUBSCRIBER_ID}"
    event["timestampUTC"] = int(dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC).timestamp() * 1000)
    return event


def person(key: str, email: str, **extra: str | None) -> dict[str, str]:
    return subscriber(key, email, FirstName=key, LastName="Customer", **extra)


def record_of(key: str) -> Individual:
    return CrossReference.objects.select_related("individual").get(system=MARKETING_CLOUD, external_id=key).individual


# -- point 2: the unsubscribe reaches the right person -----------------------------------------


def test_a_numeric_key_equal_to_anothers_subscriber_id_does_not_take_their_unsubscribe(registered, journey, sandbox):
    # Retailers use their customer number as SubscriberKey. This one's journey data carries no
    # SubscriberId; its key happens to be the number Marketing Cloud gave another subscriber.
    journey.execute(person(SUBSCRIBER_ID, "ann.numeric@example.com", SubscriberId=None)).raise_for_status()
    journey.execute(person("40000017", "bea.owner@example.com", SubscriberId=SUBSCRIBER_ID)).raise_for_status()
    run_queued()

    # The owner of SubscriberID 178363503 unsubscribes (ENS sends the ID, never the key).
    assert sandbox.deliver_ens([documented_unsubscribe(to="bea.owner@example.com")]) == [200]
    run_queued()

    owner, bystander = record_of("40000017"), record_of(SUBSCRIBER_ID)
    assert owner.do_not_market_since == dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    assert bystander.do_not_market_since is None, "someone else's unsubscribe reached the numeric key"
    assert EnsNotification.objects.get().master_id == owner.master_id


def test_an_unknown_subscriber_id_is_matched_by_email_never_by_key(registered, journey, sandbox):
    journey.execute(person(SUBSCRIBER_ID, "ann.numeric@example.com", SubscriberId=None)).raise_for_status()
    journey.execute(person("40000017", "bea.owner@example.com", SubscriberId=None)).raise_for_status()
    run_queued()

    # Nobody holds SubscriberID 178363503; one key equals it. The address decides.
    sandbox.deliver_ens([documented_unsubscribe(to="Bea.Owner@example.com")])
    run_queued()

    assert record_of("40000017").do_not_market_since is not None
    assert record_of(SUBSCRIBER_ID).do_not_market_since is None
    assert EnsNotification.objects.get().status == "applied"


def test_the_subscriber_id_is_kept_apart_from_the_key(journey, sandbox):
    journey.execute(person("50000001", "cy@example.com", SubscriberId=None)).raise_for_status()
    run_queued()
    xref = CrossReference.objects.get(external_id="50000001")
    assert xref.system_record_id == "" and xref.source_payload["id"] is None  # not the key in its place

    journey.execute(person("50000001", "cy@example.com", SubscriberId="912345", ModifiedDate="2026-11-02T09:00:00Z"))
    run_queued()
    xref.refresh_from_db()
    assert (xref.external_id, xref.system_record_id) == ("50000001", "912345")

    # A later call without it leaves the known SubscriberID in place.
    journey.execute(person("50000001", "cy@example.com", SubscriberId=None, ModifiedDate="2026-11-03T09:00:00Z"))
    run_queued()
    xref.refresh_from_db()
    assert xref.system_record_id == "912345"


def test_a_subscriber_id_that_is_not_a_number_is_refused_naming_the_field(journey, sandbox):
    response = journey.execute(person("SK-7", "dee@example.com", SubscriberId="SK-7"))
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["inArguments.SubscriberId"]
    assert not CrossReference.objects.exists()


# -- point 2: a list's unsubscribe is that list's consent ---------------------------------------


def test_a_list_unsubscribe_is_that_lists_consent_and_the_person_stays_marketable(
    registered, journey, sandbox, api, admin_client
):
    journey.execute(person("40000017", "bea.owner@example.com", SubscriberId=SUBSCRIBER_ID)).raise_for_status()
    run_queued()
    individual = record_of("40000017")

    # The documented event as it is: from list 69238, not this tenant's All Subscribers list (10001).
    event = documented_unsubscribe(to="bea.owner@example.com", list_id="69238")
    assert sandbox.deliver_ens([event]) == [200]
    run_queued()

    individual.refresh_from_db()
    assert individual.do_not_market_since is None  # still marketable on every other list
    [consent] = CommunicationSubscriptionConsent.objects.filter(individual=individual)
    since = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    assert (consent.system, consent.subscription_id, consent.channel, consent.status) == (
        MARKETING_CLOUD,
        "69238",
        "Email",
        "OptOut",
    )
    assert consent.effective_from == since and consent.capture_source == "MARKETING_CLOUD_ENS"
    [entry] = HistoryEntry.objects.filter(individual=individual, action="consent")
    assert entry.before is None
    assert entry.after == {
        "communicationSubscription": "MARKETING_CLOUD:69238",
        "channel": "Email",
        "status": "OptOut",
        "effective_from": since.isoformat(),
        "consent_source": "MARKETING_CLOUD_ENS",
    }

    # The read API, in the CIM shape (Salesforce's CommSubscriptionConsent names).
    body = api.get(f"{api.base_url}/api/v1/individuals/{individual.master_id}", timeout=10).json()
    assert body["doNotMarketFromUpdateDate"] is None
    assert body["communicationSubscriptionConsents"] == [
        {
            "communicationSubscription": {"externalSourceId": MARKETING_CLOUD, "externalRecordId": "69238"},
            "engagementChannelType": "Email",
            "privacyConsentStatus": "OptOut",
            "effectiveFromDate": "2026-11-20T10:00:00Z",
            "consentCapturedSource": "MARKETING_CLOUD_ENS",
        }
    ]
    # The change event downstream systems get carries it too.
    from customers.models import ChangeEvent

    change = ChangeEvent.objects.filter(master_id=individual.master_id, change_type="consent").get()
    assert change.snapshot["communicationSubscriptionConsents"] == body["communicationSubscriptionConsents"]

    # The record page.
    page = admin_client.get(f"/admin/customers/individual/{individual.pk}/change/").content.decode()
    assert "consent per list and channel" in page.lower()
    assert "69238" in page and "Opted out" in page and SUBSCRIBER_ID in page  # the SubscriberID, shown apart

    # ENS redelivers; a later unsubscribe from the same list: nothing changes, no more history.
    sandbox.deliver_ens([event])
    later = dict(event, compositeId="1722299.69238.15607.178363503", timestampUTC=event["timestampUTC"] + 60_000)
    sandbox.deliver_ens([later])
    run_queued()
    assert HistoryEntry.objects.filter(individual=individual, action="consent").count() == 1
    consent.refresh_from_db()
    assert consent.effective_from == since

    # From All Subscribers: now a global do-not-market, the list's consent kept as it was.
    sandbox.deliver_ens([documented_unsubscribe(to="bea.owner@example.com")])
    run_queued()
    individual.refresh_from_db()
    assert individual.do_not_market_since == since
    assert CommunicationSubscriptionConsent.objects.filter(individual=individual).count() == 1


def test_unset_all_subscribers_list_id_makes_every_unsubscribe_global_and_keeps_the_list(
    registered, journey, sandbox, settings
):
    settings.MC_ALL_SUBSCRIBERS_LIST_ID = []
    journey.execute(person("40000017", "bea.owner@example.com", SubscriberId=SUBSCRIBER_ID)).raise_for_status()
    run_queued()
    sandbox.deliver_ens([documented_unsubscribe(to="bea.owner@example.com", list_id="69238")])
    run_queued()
    individual = record_of("40000017")
    assert individual.do_not_market_since is not None  # cannot tell: nobody is mailed who asked not to be
    assert CommunicationSubscriptionConsent.objects.get(individual=individual).subscription_id == "69238"
    assert HistoryEntry.objects.filter(individual=individual, action="consent").count() == 2


def test_a_merge_carries_the_list_consents_to_the_survivor(registered, journey, sandbox):
    journey.execute(person("40000017", "bea.owner@example.com", SubscriberId=SUBSCRIBER_ID)).raise_for_status()
    journey.execute(person("40000018", "bea.other@example.com", SubscriberId="178363504")).raise_for_status()
    run_queued()
    newer = email_unsubscribe_event("40000018", subscriber_id="178363504", list_id="69238")
    sandbox.deliver_ens([newer])
    run_queued()
    older, retired = record_of("40000017"), record_of("40000018")
    assert retired.subscription_consents.count() == 1

    survivor = merge_individuals(retired, older, actor="user:steward")

    assert survivor.pk == older.pk
    assert list(survivor.subscription_consents.values_list("subscription_id", "status")) == [("69238", "OptOut")]
    assert CommunicationSubscriptionConsent.objects.count() == 1

    # Split off again: the new record keeps its system's list consents (the original keeps them too).
    moved_back = CrossReference.objects.get(external_id="40000018")
    split = unmerge_cross_reference(moved_back, actor="user:steward")
    assert list(split.subscription_consents.values_list("subscription_id", flat=True)) == ["69238"]
    assert survivor.subscription_consents.count() == 1


# -- point 3: signature keys read either way ----------------------------------------------------


@pytest.mark.parametrize("key_encoding", ["base64", "raw"])
def test_batches_signed_with_either_reading_of_the_key_are_taken(registered, journey, sandbox, key_encoding):
    journey.execute(person("40000017", "bea.owner@example.com", SubscriberId=SUBSCRIBER_ID)).raise_for_status()
    run_queued()
    event = documented_unsubscribe(to="bea.owner@example.com")
    assert sandbox.deliver_ens([event], key_encoding=key_encoding) == [200]
    run_queued()
    assert record_of("40000017").do_not_market_since is not None

    # Well-formed but wrong, or signed with another key in that same reading: refused, nothing stored.
    other_key = FIXTURES["create_callback_response"][0]["signatureKey"]
    forged = documented_unsubscribe(to="someone@example.com")
    assert sandbox.deliver_ens([forged], key_encoding=key_encoding, tamper=True) == [401]
    assert sandbox.deliver_ens([forged], key_encoding=key_encoding, signature_key=other_key) == [401]
    assert EnsNotification.objects.count() == 1


@pytest.mark.parametrize("key_encoding", ["base64", "raw"])
def test_the_environment_key_is_taken_in_either_reading(ens_url, settings, key_encoding):
    key = FIXTURES["create_callback_response"][0]["signatureKey"]  # the documented key
    settings.MC_ENS_SIGNATURE_KEY = key
    body = encode_batch([documented_unsubscribe(to="nobody@example.com")])
    headers = {"Content-Type": "application/json", "x-sfmc-ens-signature": sign_ens(body, key, key_encoding)}
    assert requests.post(ens_url, data=body, headers=headers, timeout=5).status_code == 200
    wrong = {**headers, "x-sfmc-ens-signature": sign_ens(body + b" ", key, key_encoding)}
    response = requests.post(ens_url, data=body, headers=wrong, timeout=5)
    assert response.status_code == 401 and response.json()["title"] == "Invalid signature"


def test_every_key_and_reading_is_compared_in_constant_time(registered, ens_url, sandbox, settings, monkeypatch):
    settings.MC_ENS_SIGNATURE_KEY = FIXTURES["create_callback_response"][0]["signatureKey"]
    compared: list[int] = []
    constant_time_compare = hmac.compare_digest

    def counting_compare(a, b):
        compared.append(len(a))
        return constant_time_compare(a, b)

    monkeypatch.setattr(hub_ens.hmac, "compare_digest", counting_compare)
    # Signed with the first candidate tried (the environment key's raw bytes): still all four compared.
    body = encode_batch([documented_unsubscribe(to="nobody@example.com")])
    signature = sign_ens(body, settings.MC_ENS_SIGNATURE_KEY, "raw")
    headers = {"Content-Type": "application/json", "x-sfmc-ens-signature": signature}
    assert requests.post(ens_url, data=body, headers=headers, timeout=5).status_code == 200
    assert compared == [32, 32, 32, 32]  # two keys (environment, callback) x two readings, no early exit


# -- the data migration: only what is known to be a SubscriberID stays ---------------------------


def test_the_migration_keeps_only_values_known_to_be_subscriber_ids(journey, sandbox):
    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("integrations.marketing_cloud.migrations.0006_subscriber_ids_apart_from_keys")
    for key, subscriber_id in [
        ("SK-A", "700001"),  # a SubscriberID: kept
        ("SK-B", None),  # the key fell back into the column: cleared
        ("60000003", None),  # a numeric key fell back: cannot tell, no event says so: cleared
        ("60000004", "60000004"),  # a numeric key equal to its SubscriberID, its journey call says so: kept
    ]:
        journey.execute(person(key, f"{key.lower()}@example.com", SubscriberId=subscriber_id)).raise_for_status()
    run_queued()
    # As the old mapping left them: the key where no SubscriberId came, and one that is no number.
    CrossReference.objects.filter(external_id__in=["SK-B", "60000003"]).update(system_record_id=F("external_id"))
    journey.execute(person("SK-E", "sk-e@example.com", SubscriberId="700005")).raise_for_status()
    run_queued()
    CrossReference.objects.filter(external_id="SK-E").update(system_record_id="Contact.Key")
    # A poller row (a flat object) confirms 60000006 as its SubscriberID.
    journey.execute(person("60000006", "p6@example.com", SubscriberId=None)).raise_for_status()
    run_queued()
    CrossReference.objects.filter(external_id="60000006").update(system_record_id="60000006")
    InboundEvent.objects.create(
        channel="mc_poller",
        system=MARKETING_CLOUD,
        external_id="60000006",
        idempotency_key="mc-poll:60000006:test",
        raw_body=b"{}",
        payload={"SubscriberKey": "60000006", "SubscriberId": "60000006"},
        status="synced",
    )

    class Editor:
        pass

    editor = Editor()
    editor.connection = connection
    migration.clear_values_that_are_not_subscriber_ids(apps, editor)

    held = dict(CrossReference.objects.values_list("external_id", "system_record_id"))
    assert held == {
        "SK-A": "700001",
        "SK-B": "",
        "60000003": "",
        "60000004": "60000004",
        "SK-E": "",
        "60000006": "60000006",
    }
