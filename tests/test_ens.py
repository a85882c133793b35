"""ENS callbacks: registration, signed batches, unsubscribes onto the golden record."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from customers.models import Individual
from integrations.marketing_cloud.models import EnsCallback, EnsNotification
from integrations.marketing_cloud.sandbox.ens import email_open_event, email_unsubscribe_event, sign_ens
from tests.conftest import subscriber
from tests.queue import queued_tasks, run_queued

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ens_url(live_server):
    return f"{live_server.url}/api/v1/marketing-cloud/ens"


@pytest.fixture
def registered(ens_url, sandbox):
    out = io.StringIO()
    call_command("mc_ens_register", ens_url, "--allow-insecure", stdout=out)
    assert "verified and subscribed" in out.getvalue()
    return EnsCallback.objects.get()


def test_registration_stores_the_signature_key_and_verifies(registered, sandbox):
    [callback] = sandbox.callbacks()
    assert callback["verified"] is True
    assert registered.signature_key == callback["signatureKey"] and registered.verified_at
    assert sandbox.subscriptions()[0]["eventCategoryTypes"] == ["EngagementEvents.EmailUnsubscribe"]


def test_registration_refuses_urls_ens_would_refuse(sandbox):
    with pytest.raises(CommandError, match="https"):
        call_command("mc_ens_register", "http://hub.example.com:8080/ens")
    with pytest.raises(CommandError, match="query"):
        call_command("mc_ens_register", "https://hub.example.com/ens?x=1")


def test_registration_fails_clearly_when_the_hub_is_not_reachable(sandbox):
    with pytest.raises(CommandError, match="Creating the callback failed|did not receive"):
        call_command("mc_ens_register", "http://127.0.0.1:9/nothing", "--allow-insecure")


def test_unsubscribe_sets_do_not_market_on_the_golden_record(registered, journey, sandbox):
    journey.execute(subscriber(SubscriberId="777001"))
    run_queued()
    event = email_unsubscribe_event("SK-1001", subscriber_id="777001", email_address="ada.lovelace@example.com")
    assert sandbox.deliver_ens([event]) == [200]
    assert [t["func"] for t in queued_tasks()] == ["integrations.marketing_cloud.ens.apply_notifications"]
    run_queued()
    individual = Individual.objects.get()
    assert individual.do_not_market_since is not None
    assert individual.consent_source == "MARKETING_CLOUD_ENS"
    assert individual.history.filter(action="consent").count() == 1
    notification = EnsNotification.objects.get()
    assert notification.status == "applied" and notification.master_id == individual.master_id

    # ENS redelivers the same event: ignored.
    assert sandbox.deliver_ens([event]) == [200]
    run_queued()
    assert EnsNotification.objects.count() == 1
    assert individual.history.filter(action="consent").count() == 1


def test_unsubscribe_found_by_email_when_the_subscriber_id_is_unknown(registered, journey, sandbox):
    journey.execute(subscriber())
    run_queued()
    event = email_unsubscribe_event("SK-x", subscriber_id="999", email_address="ADA.Lovelace@example.com")
    sandbox.deliver_ens([event])
    run_queued()
    assert Individual.objects.get().do_not_market_since is not None


def test_other_event_types_are_stored_and_counted(registered, ens_url, sandbox, admin_client):
    events = [email_open_event("SK-1", subscriber_id="1") for _ in range(3)]
    assert sandbox.deliver_ens(events, callback_id=registered.callback_id) == [200]
    run_queued()
    assert EnsNotification.objects.filter(status="stored", event_type="EngagementEvents.EmailOpen").count() == 3
    page = admin_client.get("/admin/marketing_cloud/ensnotification/").content.decode()
    assert "EngagementEvents.EmailOpen" in page and "<td>3</td>" in page


def test_unknown_person_is_kept_as_unmatched(registered, sandbox):
    sandbox.deliver_ens([email_unsubscribe_event("nobody@example.com", subscriber_id="123")])
    run_queued()
    assert EnsNotification.objects.get().status == "unmatched"


def test_bad_or_missing_signature_is_refused_and_nothing_stored(registered, ens_url, sandbox):
    import requests

    event = email_unsubscribe_event("SK-1", subscriber_id="1")
    assert sandbox.deliver_ens([event], tamper=True) == [401]
    body = b'[{"eventCategoryType": "EngagementEvents.EmailUnsubscribe", "compositeId": "x"}]'
    assert requests.post(ens_url, data=body, timeout=5, headers={"Content-Type": "application/json"}).status_code == 401
    wrong_key = "V27FXfqI3DnhfQW1bhFDeJixpt8eDAY5R24UJI3cK6M="
    response = requests.post(
        ens_url,
        data=body,
        timeout=5,
        headers={"Content-Type": "application/json", "x-sfmc-ens-signature": sign_ens(body, wrong_key)},
    )
    assert response.status_code == 401
    assert EnsNotification.objects.count() == 0 and queued_tasks() == []


def test_signature_key_from_the_environment_is_accepted(ens_url, settings, sandbox):
    import requests

    key = "V27FXfqI3DnhfQW1bhFDeJixpt8eDAY5R24UJI3cK6M="
    settings.MC_ENS_SIGNATURE_KEY = key
    body = b'[{"eventCategoryType":"EngagementEvents.EmailOpen","compositeId":"c1","timestampUTC":1764200000000}]'
    response = requests.post(
        ens_url,
        data=body,
        timeout=5,
        headers={"Content-Type": "application/json", "x-sfmc-ens-signature": sign_ens(body, key)},
    )
    assert response.status_code == 200 and EnsNotification.objects.count() == 1


def test_a_full_batch_of_1000_is_stored_in_one_answer_within_ens_limit(registered, sandbox):
    events = [email_unsubscribe_event(f"p{i}@example.com", subscriber_id=str(10_000 + i)) for i in range(1000)]
    # The sandbox gives up after ENS's 3 s, like ENS: status 0 would mean too slow.
    assert sandbox.deliver_ens(events) == [200]
    assert EnsNotification.objects.count() == 1000
