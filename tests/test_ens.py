"""ENS callbacks: registration, signed batches, unsubscribes onto the golden record."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from customers.models import Individual
from integrations.marketing_cloud.models import EnsCallback, EnsNotification
from sandboxes.marketing_cloud.ens import email_open_event, email_unsubscribe_event, sign_ens
from tests.conftest import subscriber
from tests.logs import captured_console
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


@pytest.mark.django_db
def test_registration_refuses_urls_ens_would_refuse(sandbox):
    with pytest.raises(CommandError, match="https"):
        call_command("mc_ens_register", "http://hub.example.com:8080/ens")
    with pytest.raises(CommandError, match="query"):
        call_command("mc_ens_register", "https://hub.example.com/ens?x=1")


@pytest.mark.django_db
def test_registration_fails_clearly_when_the_hub_is_not_reachable(sandbox):
    with pytest.raises(CommandError, match="Creating the callback failed|did not receive"):
        call_command("mc_ens_register", "http://127.0.0.1:9/nothing", "--allow-insecure")
    assert EnsCallback.objects.count() == 0  # the registration it opened is closed again


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


# -- the verification handshake: taken only by a registration that waits for it -------------------

HANDSHAKE_KEY = "bm90LXRoZS1rZXktZW5zLXNlbnQtdG8tdGhpcy1odWI="


def post_handshake(url: str, callback_id: object, verification_key: object = HANDSHAKE_KEY):
    import requests

    body = {"callbackId": callback_id, "verificationKey": verification_key}
    return requests.post(url, json=body, timeout=5)


def assert_problem(response, status: int, title: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["title"] == title


def test_a_verified_callbacks_key_is_never_overwritten(registered, ens_url, sandbox):
    response = post_handshake(ens_url, registered.callback_id)
    assert_problem(response, 409, "Callback already verified")
    callback = EnsCallback.objects.get()
    assert callback.verification_key == sandbox.callbacks()[0]["verificationKey"] != HANDSHAKE_KEY
    assert callback.signature_key == registered.signature_key and callback.verified_at == registered.verified_at


def test_a_handshake_no_registration_waits_for_is_refused_and_nothing_stored(ens_url):
    for n in range(5):
        assert_problem(post_handshake(ens_url, f"0f8fad5b-d9cb-469f-a165-70867728950{n}"), 404, "Unknown callback")
    assert EnsCallback.objects.count() == 0


def test_once_registration_is_done_no_further_handshake_is_taken(registered, ens_url):
    assert_problem(post_handshake(ens_url, "7c9e6679-7425-40de-944b-e07fc1f90ae7"), 404, "Unknown callback")
    assert list(EnsCallback.objects.values_list("callback_id", flat=True)) == [registered.callback_id]


def test_a_handshake_after_the_window_is_refused(ens_url, settings):
    from django.utils import timezone

    settings.ENS_HANDSHAKE_WINDOW_SECONDS = 900
    opened = timezone.now() - dt.timedelta(seconds=901)
    waiting = EnsCallback.objects.create(name="customer-hub", url=ens_url, created_at=opened)
    assert_problem(post_handshake(ens_url, "16fd2706-8baf-433b-82eb-8c7fada847da"), 410, "Registration window passed")
    waiting.refresh_from_db()
    assert waiting.callback_id is None and waiting.verification_key == "" and EnsCallback.objects.count() == 1

    # The same registration inside its window takes the handshake, and only one.
    EnsCallback.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - dt.timedelta(seconds=899))
    assert post_handshake(ens_url, "16fd2706-8baf-433b-82eb-8c7fada847da").status_code == 200
    waiting.refresh_from_db()
    assert (waiting.callback_id, waiting.verification_key) == ("16fd2706-8baf-433b-82eb-8c7fada847da", HANDSHAKE_KEY)
    # ENS repeating the same handshake is answered 200; another key for it, or another callback, is not.
    assert post_handshake(ens_url, "16fd2706-8baf-433b-82eb-8c7fada847da").status_code == 200
    other_key = "c29tZS1vdGhlci1rZXk="
    assert_problem(post_handshake(ens_url, waiting.callback_id, other_key), 409, "Handshake already received")
    assert_problem(post_handshake(ens_url, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"), 404, "Unknown callback")
    waiting.refresh_from_db()
    assert waiting.verification_key == HANDSHAKE_KEY and EnsCallback.objects.count() == 1


@pytest.mark.parametrize(
    ("callback_id", "verification_key", "fields"),
    [
        (123, HANDSHAKE_KEY, ["callbackId"]),
        ("", HANDSHAKE_KEY, ["callbackId"]),
        ("x" * 65, HANDSHAKE_KEY, ["callbackId"]),
        ("cb 1", HANDSHAKE_KEY, ["callbackId"]),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", None, ["verificationKey"]),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", "a" * 201, ["verificationKey"]),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", "key\n", ["verificationKey"]),
        (["a"], {"k": "v"}, ["callbackId", "verificationKey"]),
    ],
)
def test_a_malformed_handshake_is_refused_naming_the_field(ens_url, callback_id, verification_key, fields):
    EnsCallback.objects.create(name="customer-hub", url=ens_url)  # a registration waiting: still refused
    response = post_handshake(ens_url, callback_id, verification_key)
    assert_problem(response, 400, "Invalid handshake")
    assert [error["field"] for error in response.json()["errors"]] == fields
    assert EnsCallback.objects.get().callback_id is None


def test_a_newline_in_a_logged_value_cannot_forge_a_log_line(ens_url):
    forged = "2026-12-01 12:00:00,000 CRITICAL forged"  # short: the old code cut IDs at 64
    with captured_console() as output:
        post_handshake(ens_url, f"cb\n{forged}\r\x1b[2K\x85\u2028end")
    lines = output.getvalue().splitlines()
    assert not any(line.startswith(forged) for line in lines), "a logged value started a line of its own"
    [line] = [line for line in lines if "ENS" in line and "handshake" in line]
    assert f"cb\\n{forged}\\r\\x1b[2K\\x85\\u2028end" in line


def test_registration_clears_what_earlier_runs_left_unfinished(ens_url, sandbox):
    from django.utils import timezone

    long_ago = timezone.now() - dt.timedelta(days=1)
    EnsCallback.objects.create(callback_id="junk-from-the-open-endpoint", verification_key="a2V5", created_at=long_ago)
    EnsCallback.objects.create(name="crashed run", url=ens_url, created_at=long_ago)
    call_command("mc_ens_register", ens_url, "--allow-insecure", stdout=io.StringIO())
    [callback] = EnsCallback.objects.all()
    assert callback.callback_id == sandbox.callbacks()[0]["callbackId"] and callback.verified_at


# -- running the registration again ---------------------------------------------------------------


def register(ens_url: str, *extra: str) -> str:
    out = io.StringIO()
    call_command("mc_ens_register", ens_url, "--allow-insecure", *extra, stdout=out)
    return out.getvalue()


def assert_one_verified_callback(sandbox) -> EnsCallback:
    """One callback for the URL in Marketing Cloud, verified, and one verified row holding its key."""
    [at_ens] = sandbox.callbacks()
    [row] = EnsCallback.objects.all()
    assert at_ens["verified"] is True and row.verified_at is not None
    assert (row.callback_id, row.signature_key) == (at_ens["callbackId"], at_ens["signatureKey"])
    return row


def test_running_the_registration_again_reuses_the_verified_callback(registered, ens_url, sandbox):
    output = register(ens_url)
    assert "already registered" in output and "no new callback" in output and "reused as it is" in output
    row = assert_one_verified_callback(sandbox)
    assert (row.callback_id, row.signature_key) == (registered.callback_id, registered.signature_key)
    assert len(sandbox.subscriptions()) == 1
    event = email_unsubscribe_event("SK-1", subscriber_id="1")
    assert sandbox.deliver_ens([event]) == [200]

    # Run with another event type: the same callback, its one subscription now carries both.
    output = register(
        ens_url, "--event-type", "EngagementEvents.EmailUnsubscribe", "--event-type", "EngagementEvents.EmailOpen"
    )
    assert "subscription updated" in output
    assert assert_one_verified_callback(sandbox).callback_id == registered.callback_id
    [subscription] = sandbox.subscriptions()
    assert subscription["eventCategoryTypes"] == ["EngagementEvents.EmailUnsubscribe", "EngagementEvents.EmailOpen"]


def test_a_verified_callback_whose_key_is_not_here_gets_a_new_key(registered, ens_url, sandbox):
    old_key = registered.signature_key
    EnsCallback.objects.all().delete()  # a new database, or a callback registered from elsewhere
    output = register(ens_url)
    assert "regenerated" in output and "no new callback" in output
    row = assert_one_verified_callback(sandbox)
    assert row.callback_id == registered.callback_id and row.signature_key != old_key
    # Batches signed with the new key are taken; the old key signs nothing any more.
    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1", subscriber_id="1")]) == [200]
    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1", subscriber_id="1")], signature_key=old_key) == [401]


def _unverified_callback_at_ens(ens_url: str) -> str:
    """A callback created at ENS whose run stopped after the handshake (the hub holds its verification key)."""
    from integrations.marketing_cloud.client import MarketingCloudClient

    EnsCallback.objects.create(name="customer-hub", url=ens_url)  # the registration that run opened
    [created] = MarketingCloudClient.from_settings().request(
        "POST", "/platform/v1/ens-callbacks", json=[{"callbackName": "customer-hub", "url": ens_url}]
    )
    return created["callbackId"]


def test_an_unverified_callback_is_verified_with_the_key_its_handshake_left(ens_url, sandbox):
    callback_id = _unverified_callback_at_ens(ens_url)
    assert sandbox.callbacks()[0]["verified"] is False
    output = register(ens_url)
    assert "verified it with the verification key stored here" in output and "regenerated" in output
    assert assert_one_verified_callback(sandbox).callback_id == callback_id
    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1", subscriber_id="1")]) == [200]


def test_an_unverified_callback_without_its_key_is_deleted_and_created_again(ens_url, sandbox):
    stale = _unverified_callback_at_ens(ens_url)
    EnsCallback.objects.all().delete()  # its verification key is gone with the row
    output = register(ens_url)
    assert "deleted it" in output and "created, verified and subscribed" in output
    row = assert_one_verified_callback(sandbox)
    assert row.callback_id != stale and len(sandbox.subscriptions()) == 1
