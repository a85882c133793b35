"""Tests of the sandbox's Event Notification Service (ENS) emulation, over real HTTP.

No database and no Django: a sandbox on a free port, and a small stdlib HTTP server standing in
for the hub's ENS callback, which answers the verification POST and records notification batches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from sandboxes.marketing_cloud.ens import (
    ALL_SUBSCRIBERS_LIST_ID,
    EMAIL_OPEN,
    EMAIL_UNSUBSCRIBE,
    SIGNATURE_HEADER,
    email_open_event,
    email_unsubscribe_event,
    encode_batch,
    send_batch,
    sign_ens,
    subscriber_id_for,
    verify_ens,
)
from sandboxes.marketing_cloud.server import MarketingCloudSandbox, SandboxConfig

CALLBACKS = "/platform/v1/ens-callbacks"
VERIFY = "/platform/v1/ens-verify"
SUBSCRIPTIONS = "/platform/v1/ens-subscriptions"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """The hub's callback endpoint, played by a ThreadingHTTPServer in a daemon thread."""

    server: ThreadingHTTPServer
    verify_status: int = 200
    batch_status: int = 200
    batch_delay: float = 0.0
    on_verification: Callable[[dict[str, Any]], None] | None = None
    verifications: list[Request] = field(default_factory=list)
    batches: list[Request] = field(default_factory=list)

    def url(self, path: str = "/ens") -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            payload = request.json()
            # ENS tells the two apart the same way: only the verification POST has a verificationKey.
            if isinstance(payload, dict) and "verificationKey" in payload:
                receiver.verifications.append(request)
                if receiver.on_verification is not None:
                    receiver.on_verification(payload)
                status = receiver.verify_status
            else:
                receiver.batches.append(request)
                time.sleep(receiver.batch_delay)
                status = receiver.batch_status
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def sandbox() -> Iterator[MarketingCloudSandbox]:
    server = MarketingCloudSandbox(config=SandboxConfig(seed=7)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    hub = Receiver(server)
    server.RequestHandlerClass = _handler(hub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def token_for(sandbox: MarketingCloudSandbox) -> str:
    body = {
        "grant_type": "client_credentials",
        "client_id": sandbox.config.client_id,
        "client_secret": sandbox.config.client_secret,
    }
    response = requests.post(f"{sandbox.url}/v2/token", json=body, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


class Api:
    """Bearer-authenticated calls to the sandbox's ENS routes."""

    def __init__(self, sandbox: MarketingCloudSandbox) -> None:
        self.base = sandbox.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token_for(sandbox)}"

    def post(self, path: str, body: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=10)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base + path, timeout=10)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.base + path, timeout=10)

    def put(self, path: str, body: Any) -> requests.Response:
        return self.session.put(self.base + path, json=body, timeout=10)

    def create_callback(self, url: str, name: str = "hub", **extra: Any) -> requests.Response:
        return self.post(CALLBACKS, [{"callbackName": name, "url": url, **extra}])

    def verified_callback(self, receiver: Receiver, path: str = "/ens", **extra: Any) -> dict[str, Any]:
        """Create and verify a callback the way the hub does; return the creation response item."""
        created = self.create_callback(receiver.url(path), **extra)
        assert created.status_code == 201, created.text
        challenge = receiver.verifications[-1].json()
        assert self.post(VERIFY, challenge).status_code == 200
        return created.json()[0]

    def subscribe(self, callback_id: str, types: list[str], name: str = "unsubscribes", **extra: Any) -> Any:
        response = self.post(
            SUBSCRIPTIONS, [{"subscriptionName": name, "callbackId": callback_id, "eventCategoryTypes": types, **extra}]
        )
        assert response.status_code == 201, response.text
        return response.json()[0]


@pytest.fixture
def api(sandbox: MarketingCloudSandbox) -> Api:
    return Api(sandbox)


def hand_signature(body: bytes, signature_key: str) -> str:
    # Written out independently of ens.sign_ens: HMAC-SHA256 keyed with the base64-decoded key.
    key = base64.b64decode(signature_key)
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def hand_signature_raw(body: bytes, signature_key: str) -> str:
    # The other reading public consumers use: the key's own UTF-8 bytes, not decoded.
    return base64.b64encode(hmac.new(signature_key.encode(), body, hashlib.sha256).digest()).decode()


FIXTURES = json.loads((Path(__file__).parent.parent / "fixtures" / "ens_events.json").read_text())


# -- callbacks -------------------------------------------------------------------------------


def test_creating_a_callback_posts_the_verification_challenge_and_returns_the_signature_key(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    response = api.create_callback(receiver.url("/hooks/ens"), name="hub-ens")

    assert response.status_code == 201
    [created] = response.json()
    assert set(created) == {"callbackName", "callbackId", "url", "signatureKey", "maxBatchSize"}
    assert created["callbackName"] == "hub-ens"
    assert created["url"] == receiver.url("/hooks/ens")
    assert created["maxBatchSize"] == 1000  # the documented default
    assert len(base64.b64decode(created["signatureKey"], validate=True)) == 32

    [challenge] = receiver.verifications
    assert challenge.path == "/hooks/ens"
    assert challenge.headers["content-type"] == "application/json"
    assert SIGNATURE_HEADER not in challenge.headers  # the challenge is not signed
    assert set(challenge.json()) == {"callbackId", "verificationKey"}
    assert challenge.json()["callbackId"] == created["callbackId"]

    [stored] = sandbox.callbacks()
    assert stored["verified"] is False
    assert stored["status"] == "unverified"
    assert stored["signatureKey"] == created["signatureKey"]
    assert stored["verificationKey"] == challenge.json()["verificationKey"]


def test_verify_needs_the_key_the_callback_received(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    callback_id = api.create_callback(receiver.url()).json()[0]["callbackId"]
    challenge = receiver.verifications[0].json()

    # Salesforce documents 404 for "incorrect callback ID, verification key, or both".
    wrong_key = api.post(VERIFY, {"callbackId": callback_id, "verificationKey": "bm90IHRoZSBrZXk="})
    assert wrong_key.status_code == 404
    assert set(wrong_key.json()) == {"message", "errorcode", "documentation"}
    assert api.post(VERIFY, {**challenge, "callbackId": "no-such-callback"}).status_code == 404
    missing = api.post(VERIFY, {"callbackId": callback_id})
    assert missing.status_code == 400
    assert missing.json()["errorcode"] == 10002
    assert sandbox.callbacks()[0]["verified"] is False

    verified = api.post(VERIFY, challenge)
    assert verified.status_code == 200
    assert verified.json()["callbackId"] == callback_id
    assert verified.json()["status"] == "verified"
    assert sandbox.callbacks()[0]["verified"] is True
    assert api.post(VERIFY, challenge).status_code == 200  # a retried verify is harmless


def test_get_never_shows_the_signature_key(sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver) -> None:
    created = api.verified_callback(receiver, maxBatchSize=250)

    listed = api.get(CALLBACKS)
    assert listed.status_code == 200
    assert listed.json() == [
        {
            "callbackId": created["callbackId"],
            "callbackName": "hub",
            "url": receiver.url(),
            "maxBatchSize": 250,
            "status": "verified",
            "statusReason": "none",
        }
    ]
    one = api.get(f"{CALLBACKS}/{created['callbackId']}")
    assert one.status_code == 200
    assert one.json() == listed.json()[0]
    assert "signatureKey" not in one.text and "verificationKey" not in one.text
    assert api.get(f"{CALLBACKS}/no-such-callback").status_code == 404
    assert sandbox.callbacks()[0]["signatureKey"] == created["signatureKey"]


def test_callback_requests_are_validated(sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver) -> None:
    url = receiver.url()
    anonymous = requests.post(sandbox.url + CALLBACKS, json=[{"callbackName": "x", "url": url}], timeout=5)
    assert anonymous.status_code == 401
    assert api.post(CALLBACKS, {"callbackName": "x", "url": url}).status_code == 400  # must be an array
    assert api.post(CALLBACKS, [{"url": url}]).json()["errorcode"] == 10002
    assert api.post(CALLBACKS, [{"callbackName": "x"}]).json()["errorcode"] == 10002
    for bad in ("ftp://example.com/ens", "not a url", f"{url}?token=1", "https://:443/ens"):
        response = api.create_callback(bad)
        assert response.status_code == 400, bad
        assert response.json()["errorcode"] == 10005
    for size in (99, 1001, "500", True):
        assert api.create_callback(url, maxBatchSize=size).status_code == 400, size
    assert receiver.verifications == []  # nothing invalid was probed

    api.verified_callback(receiver)
    duplicate = api.create_callback(url, name="again")
    assert duplicate.status_code == 400  # a URL can only be registered once

    # Real ENS only takes https://host[/path]; the test-friendly default allows http and ports.
    sandbox.configure(allow_insecure_callbacks=False)
    for bad in ("http://hub.example.com/ens", "https://hub.example.com:8443/ens"):
        response = api.create_callback(bad)
        assert response.status_code == 400, bad
        assert response.json()["errorcode"] == 10005
    with pytest.raises(ValueError, match="allow_insecure_callbacks"):
        sandbox.configure(allow_insecure_callbacks="no")


@pytest.mark.parametrize("status", [500, 204])
def test_a_callback_that_does_not_answer_200_is_not_created(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver, status: int
) -> None:
    receiver.verify_status = status

    response = api.create_callback(receiver.url())

    # Salesforce: "returns an HTTP response other than 200 OK" fails the creation with 400.
    assert response.status_code == 400
    assert response.json()["message"].startswith("Callback verification failed")
    assert f"Status: {status}" in response.json()["message"]
    assert len(receiver.verifications) == 1
    assert sandbox.callbacks() == []
    assert api.get(CALLBACKS).json() == []

    receiver.verify_status = 200
    assert api.create_callback(receiver.url()).status_code == 201  # the URL was not kept


def test_an_unreachable_callback_url_is_refused(sandbox: MarketingCloudSandbox, api: Api) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there any more

    response = api.create_callback(f"http://127.0.0.1:{port}/ens")

    assert response.status_code == 400
    assert response.json()["message"].startswith("Callback verification failed")
    assert sandbox.callbacks() == []


def test_the_hub_may_verify_while_answering_the_challenge(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    answers: list[int] = []
    # Salesforce suggests verifying straight away; the sandbox must not deadlock or 404 on that.
    receiver.on_verification = lambda challenge: answers.append(api.post(VERIFY, challenge).status_code)

    response = api.create_callback(receiver.url())

    assert response.status_code == 201
    assert answers == [200]
    assert sandbox.callbacks()[0]["verified"] is True


def test_a_callback_with_subscriptions_cannot_be_deleted(api: Api, receiver: Receiver) -> None:
    callback_id = api.verified_callback(receiver)["callbackId"]
    subscription_id = api.subscribe(callback_id, [EMAIL_UNSUBSCRIBE])["subscriptionId"]

    assert api.delete(f"{CALLBACKS}/{callback_id}").status_code == 409
    assert api.delete(f"{SUBSCRIPTIONS}/{subscription_id}").status_code == 200
    assert api.delete(f"{CALLBACKS}/{callback_id}").status_code == 200
    assert api.get(f"{CALLBACKS}/{callback_id}").status_code == 404
    assert api.delete(f"{CALLBACKS}/{callback_id}").status_code == 404


def test_a_callback_is_renamed_or_resized_but_keeps_its_url_and_keys(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    created = api.verified_callback(receiver)
    callback_id = created["callbackId"]
    renamed = api.put(CALLBACKS, [{"callbackId": callback_id, "callbackName": "hub-2", "maxBatchSize": 500}])
    assert renamed.status_code == 200
    assert renamed.json() == [
        {"callbackId": callback_id, "callbackName": "hub-2", "url": receiver.url("/ens"), "maxBatchSize": 500}
    ]
    again = api.put(CALLBACKS, [{"callbackId": callback_id, "callbackName": "hub-2", "maxBatchSize": 500}])
    assert again.status_code == 304  # "Callback already exists on the server"
    assert (
        api.put(CALLBACKS, [{"callbackId": "0f8fad5b-d9cb-469f-a165-70867728950e", "callbackName": "x"}]).status_code
        == 404
    )
    assert api.put(CALLBACKS, [{"callbackId": callback_id, "callbackName": "x", "maxBatchSize": 99}]).status_code == 400
    [callback] = sandbox.callbacks()
    assert callback["verified"] is True and callback["signatureKey"] == created["signatureKey"]


def test_regenerating_the_signature_key_retires_the_old_one(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    created = api.verified_callback(receiver)
    api.subscribe(created["callbackId"], [EMAIL_UNSUBSCRIBE])
    answer = api.put("/platform/v1/ens-regenerate", [{"callbackId": created["callbackId"]}])
    assert answer.status_code == 200
    [regenerated] = answer.json()
    assert set(regenerated) == {"callbackName", "callbackId", "url", "signatureKey"}
    assert regenerated["signatureKey"] != created["signatureKey"]
    assert len(base64.b64decode(regenerated["signatureKey"])) == 32
    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1")]) == [200]
    last = receiver.batches[-1]
    assert last.headers[SIGNATURE_HEADER] == hand_signature(last.body, regenerated["signatureKey"])
    missing = api.put("/platform/v1/ens-regenerate", [{"callbackId": "0f8fad5b-d9cb-469f-a165-70867728950e"}])
    assert missing.status_code == 404


# -- subscriptions ---------------------------------------------------------------------------


def test_a_subscription_is_updated_in_place(sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver) -> None:
    callback_id = api.verified_callback(receiver)["callbackId"]
    subscription = api.subscribe(callback_id, [EMAIL_UNSUBSCRIBE])
    body = [{"subscriptionId": subscription["subscriptionId"], "eventCategoryTypes": [EMAIL_UNSUBSCRIBE, EMAIL_OPEN]}]
    updated = api.put(SUBSCRIPTIONS, body)
    assert updated.status_code == 200
    assert updated.json()[0]["eventCategoryTypes"] == [EMAIL_UNSUBSCRIBE, EMAIL_OPEN]
    assert api.put(SUBSCRIPTIONS, body).status_code == 304
    assert [s["subscriptionId"] for s in sandbox.subscriptions()] == [subscription["subscriptionId"]]
    gone = [{"subscriptionId": "0f8fad5b-d9cb-469f-a165-70867728950e", "eventCategoryTypes": [EMAIL_OPEN]}]
    assert api.put(SUBSCRIPTIONS, gone).status_code == 404


def test_subscriptions_need_an_existing_verified_callback(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    def subscribe(**item: Any) -> requests.Response:
        body = {"subscriptionName": "unsubscribes", "eventCategoryTypes": [EMAIL_UNSUBSCRIBE], **item}
        return api.post(SUBSCRIPTIONS, [body])

    assert subscribe(callbackId="65b885ab-c2b4-46fe-85d0-d6cb8be8057d").status_code == 404
    unverified = api.create_callback(receiver.url("/unverified")).json()[0]["callbackId"]
    assert subscribe(callbackId=unverified).status_code == 400

    callback_id = api.verified_callback(receiver)["callbackId"]
    assert subscribe(callbackId=callback_id, eventCategoryTypes=[]).json()["errorcode"] == 10002
    assert subscribe(callbackId=callback_id, eventCategoryTypes=["EmailUnsubscribe"]).status_code == 400
    assert subscribe(callbackId=callback_id, filters=["definitionKey"]).status_code == 400
    assert subscribe(callbackId=callback_id, filters="definitionKey=1").status_code == 400
    assert subscribe(eventCategoryTypes=[EMAIL_UNSUBSCRIBE]).json()["errorcode"] == 10002

    created = subscribe(callbackId=callback_id, filters=["definitionKey=NA"])
    assert created.status_code == 201
    [subscription] = created.json()
    assert subscription == {
        "callbackId": callback_id,
        "callbackName": "hub",
        "subscriptionName": "unsubscribes",
        "eventCategoryTypes": [EMAIL_UNSUBSCRIBE],
        "subscriptionId": subscription["subscriptionId"],
        "filters": ["definitionKey=NA"],
        "status": "active",
    }
    # The same subscription again is "304 No Change"; the same name for something else is refused.
    assert subscribe(callbackId=callback_id, filters=["definitionKey=NA"]).status_code == 304
    assert subscribe(callbackId=callback_id).status_code == 400

    listed = api.get(SUBSCRIPTIONS).json()
    assert [s["subscriptionId"] for s in listed] == [subscription["subscriptionId"]]
    assert listed[0]["url"] == receiver.url() and listed[0]["maxBatchSize"] == 1000
    assert api.get(f"{SUBSCRIPTIONS}/{subscription['subscriptionId']}").json() == listed[0]
    assert api.get(f"/platform/v1/ens-subscriptions-by-cb/{callback_id}").json() == listed
    assert api.get(f"{SUBSCRIPTIONS}/no-such-subscription").status_code == 404
    assert sandbox.subscriptions() == listed


# -- notifications ---------------------------------------------------------------------------


def test_batches_are_signed_and_split_by_max_batch_size(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    created = api.verified_callback(receiver, maxBatchSize=100)
    api.subscribe(created["callbackId"], [EMAIL_UNSUBSCRIBE])
    events = [email_unsubscribe_event(f"SK-{n}", email_address=f"user{n}@example.com") for n in range(250)]

    statuses = sandbox.deliver_ens(events)

    assert statuses == [200, 200, 200]
    assert [len(batch.json()) for batch in receiver.batches] == [100, 100, 50]
    assert [event for batch in receiver.batches for event in batch.json()] == events  # order kept
    for batch in receiver.batches:
        assert batch.path == "/ens"
        assert batch.headers["content-type"] == "application/json"
        signature = batch.headers[SIGNATURE_HEADER]
        assert signature == sign_ens(batch.body, created["signatureKey"])
        assert signature == hand_signature(batch.body, created["signatureKey"])
        assert verify_ens(batch.body, signature, created["signatureKey"])


def test_only_subscribed_event_types_are_delivered(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    callback_id = api.verified_callback(receiver)["callbackId"]
    api.subscribe(callback_id, [EMAIL_UNSUBSCRIBE])
    opened, unsubscribed = email_open_event("SK-1"), email_unsubscribe_event("SK-1")

    assert sandbox.deliver_ens([opened, unsubscribed, email_open_event("SK-2")]) == [200]
    assert [batch.json() for batch in receiver.batches] == [[unsubscribed]]

    assert sandbox.deliver_ens([opened]) == []  # nobody subscribed to opens: nothing is sent
    assert len(receiver.batches) == 1

    # Naming the callback overrides the subscriptions (a test-only door ENS does not have).
    assert sandbox.deliver_ens([opened], callback_id=callback_id) == [200]
    assert receiver.batches[-1].json() == [opened]
    with pytest.raises(ValueError, match="no ENS callback"):
        sandbox.deliver_ens([opened], callback_id="no-such-callback")


def test_nothing_goes_to_an_unverified_callback(sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver) -> None:
    api.create_callback(receiver.url())

    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1")]) == []
    assert receiver.batches == []


def test_subscription_filters_must_all_hold(sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver) -> None:
    callback_id = api.verified_callback(receiver)["callbackId"]
    sent = "TransactionalSendEvents.EmailNotSent"
    api.subscribe(callback_id, [sent], filters=["definitionKey=welcome", "statusCode=1"])
    welcome = {"eventCategoryType": sent, "definitionKey": "welcome", "info": {"statusCode": "1"}}
    other_definition = {**welcome, "definitionKey": "receipt"}
    other_status = {**welcome, "info": {"statusCode": "2"}}

    assert sandbox.deliver_ens([other_definition, welcome, other_status]) == [200]
    assert receiver.batches[0].json() == [welcome]


def test_tampered_and_foreign_signatures_do_not_verify(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    created = api.verified_callback(receiver)
    api.subscribe(created["callbackId"], [EMAIL_UNSUBSCRIBE])
    other_key = base64.b64encode(b"k" * 32).decode()

    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1")], tamper=True) == [200]
    assert sandbox.deliver_ens([email_unsubscribe_event("SK-2")], signature_key=other_key) == [200]

    tampered, foreign = receiver.batches
    for batch in (tampered, foreign):
        signature = batch.headers[SIGNATURE_HEADER]
        assert len(base64.b64decode(signature, validate=True)) == 32  # well-formed, just wrong
        assert signature != sign_ens(batch.body, created["signatureKey"])
        assert not verify_ens(batch.body, signature, created["signatureKey"])
    assert foreign.headers[SIGNATURE_HEADER] == hand_signature(foreign.body, other_key)


def test_a_slow_or_failing_callback_shows_in_the_statuses(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    api.subscribe(api.verified_callback(receiver)["callbackId"], [EMAIL_UNSUBSCRIBE])

    receiver.batch_status = 500
    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1")]) == [500]

    receiver.batch_status, receiver.batch_delay = 200, 0.5
    sandbox.configure(ens_delivery_timeout=0.2)  # stands in for ENS's three seconds
    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1")]) == [0]


def test_the_control_endpoint_delivers(sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver) -> None:
    created = api.verified_callback(receiver, maxBatchSize=100)
    api.subscribe(created["callbackId"], [EMAIL_UNSUBSCRIBE])
    control = f"{sandbox.url}/__sandbox/ens"
    events = [email_unsubscribe_event(f"SK-{n}") for n in range(120)]

    response = requests.post(f"{control}/deliver", json={"events": events}, timeout=10)

    assert response.status_code == 200
    assert response.json() == {"statuses": [200, 200]}
    explicit = {"events": [email_open_event("SK-1")], "callbackId": created["callbackId"], "tamper": True}
    assert requests.post(f"{control}/deliver", json=explicit, timeout=10).json() == {"statuses": [200]}
    last = receiver.batches[-1]
    assert not verify_ens(last.body, last.headers[SIGNATURE_HEADER], created["signatureKey"])
    assert requests.post(f"{control}/deliver", json={"events": "nope"}, timeout=5).status_code == 400
    assert requests.post(f"{control}/deliver", json={"events": [], "callbackId": "x"}, timeout=5).status_code == 400
    assert requests.get(f"{control}/callbacks", timeout=5).json()[0]["signatureKey"] == created["signatureKey"]
    assert len(requests.get(f"{control}/subscriptions", timeout=5).json()) == 1


def test_reset_forgets_callbacks_and_subscriptions(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    api.subscribe(api.verified_callback(receiver)["callbackId"], [EMAIL_UNSUBSCRIBE])

    sandbox.reset()

    assert sandbox.callbacks() == []
    assert sandbox.subscriptions() == []
    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1")]) == []


# -- ens.py ----------------------------------------------------------------------------------


def test_unsubscribe_event_has_the_documented_shape() -> None:
    event = email_unsubscribe_event(
        "SK-1001", email_address="ada@example.com", list_id="69238", mid=1476456, timestamp_ms=1591407815000
    )

    assert event["eventCategoryType"] == "EngagementEvents.EmailUnsubscribe"
    assert event["timestampUTC"] == 1591407815000
    assert event["mid"] == event["eid"] == 1476456
    assert event["definitionKey"] == event["definitionId"] == "NA"
    composite = event["composite"]
    assert set(composite) == {"jobId", "batchId", "listId", "subscriberId"}
    assert composite["listId"] == "69238"
    assert composite["subscriberId"] == subscriber_id_for("SK-1001")
    assert event["compositeId"] == ".".join(composite[k] for k in ("jobId", "listId", "batchId", "subscriberId"))
    # As documented: address, domain, a CST-based unsubscribeDate (6 h behind) and the method.
    assert event["info"] == {
        "to": "ada@example.com",
        "domain": "example.com",
        "unsubscribeDate": 1591386215000,
        "unsubscribeMethod": "Click",
    }
    assert "subscriberKey" not in json.dumps(event)  # real unsubscribe events do not carry one

    ids = {email_unsubscribe_event("SK-1001")["compositeId"] for _ in range(500)}
    assert len(ids) == 500
    pinned = email_unsubscribe_event("SK-1", composite_id="1722201.69238.15607.178363503")
    assert pinned["compositeId"] == "1722201.69238.15607.178363503"
    assert pinned["composite"] == {
        "jobId": "1722201",
        "batchId": "15607",
        "listId": "69238",
        "subscriberId": "178363503",
    }
    assert email_unsubscribe_event("grace@example.com")["info"]["to"] == "grace@example.com"
    assert "to" not in email_unsubscribe_event("SK-2")["info"]


def test_open_event_has_the_documented_shape() -> None:
    event = email_open_event("SK-1001", email_address="ignored@example.com", subscriber_id=501)

    assert event["eventCategoryType"] == EMAIL_OPEN
    assert event["channel"] == "email"
    assert event["composite"]["subscriberId"] == "501"
    assert set(event["info"]) == {"ipAddress", "userAgent", "location"}


def test_sign_ens_rejects_a_key_that_is_not_base64() -> None:
    with pytest.raises(ValueError, match="base64"):
        sign_ens(b"[]", "not base64!")
    with pytest.raises(ValueError, match="empty"):
        sign_ens(b"[]", "")


def test_send_batch_posts_the_exact_signed_bytes(receiver: Receiver) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    events = [email_unsubscribe_event("SK-1", email_address="zoë@example.com")]

    with requests.Session() as session:
        response = send_batch(receiver.url(), events, key, session=session)
        tampered = send_batch(receiver.url(), events, key, tamper=True)

    assert response.status_code == tampered.status_code == 200
    good, bad = receiver.batches
    assert good.body == bad.body == encode_batch(events)
    assert "zoë".encode() in good.body  # raw UTF-8, not \\u escapes
    assert good.headers[SIGNATURE_HEADER] == hand_signature(good.body, key)
    assert bad.headers[SIGNATURE_HEADER] != hand_signature(bad.body, key)


def test_batches_can_be_signed_with_the_keys_raw_bytes(
    sandbox: MarketingCloudSandbox, api: Api, receiver: Receiver
) -> None:
    created = api.verified_callback(receiver)
    api.subscribe(created["callbackId"], [EMAIL_UNSUBSCRIBE])
    key = created["signatureKey"]

    assert sandbox.deliver_ens([email_unsubscribe_event("SK-1")], key_encoding="raw") == [200]
    assert sandbox.deliver_ens([email_unsubscribe_event("SK-2")]) == [200]  # base64-decoded, the default

    raw, decoded = receiver.batches
    assert raw.headers[SIGNATURE_HEADER] == hand_signature_raw(raw.body, key) != hand_signature(raw.body, key)
    assert decoded.headers[SIGNATURE_HEADER] == hand_signature(decoded.body, key)
    assert verify_ens(raw.body, raw.headers[SIGNATURE_HEADER], key, "raw")
    assert not verify_ens(raw.body, raw.headers[SIGNATURE_HEADER], key)
    with pytest.raises(ValueError, match="keyEncoding"):
        sandbox.deliver_ens([email_unsubscribe_event("SK-3")], key_encoding="hex")
    assert len(receiver.batches) == 2

    control = f"{sandbox.url}/__sandbox/ens/deliver"
    body = {"events": [email_unsubscribe_event("SK-4")], "keyEncoding": "raw"}
    assert requests.post(control, json=body, timeout=10).json() == {"statuses": [200]}
    last = receiver.batches[-1]
    assert last.headers[SIGNATURE_HEADER] == hand_signature_raw(last.body, key)
    assert requests.post(control, json={**body, "keyEncoding": "hex"}, timeout=10).status_code == 400


def test_events_carry_a_numeric_subscriber_id_apart_from_the_key_and_the_list() -> None:
    documented = FIXTURES["email_unsubscribe"]
    # A retailer's customer number as SubscriberKey: the SubscriberID is another number.
    event = email_unsubscribe_event("178363503", email_address="ann@example.com")
    assert event["composite"]["subscriberId"].isdigit()
    assert event["composite"]["subscriberId"] != "178363503"
    assert event["composite"]["listId"] == ALL_SUBSCRIBERS_LIST_ID
    # The documented shape, field for field.
    assert set(event) == set(documented)
    assert set(event["composite"]) == set(documented["composite"])
    assert set(event["info"]) == set(documented["info"])

    listed = email_unsubscribe_event("SK-1", subscriber_id=178363503, list_id=69238)
    assert (listed["composite"]["subscriberId"], listed["composite"]["listId"]) == ("178363503", "69238")
    for bad in ("SK-1", "", "0", "-5", True):
        with pytest.raises(ValueError, match="SubscriberID"):
            email_unsubscribe_event("SK-1", subscriber_id=bad)
    for bad in ("All Subscribers", "0", False):
        with pytest.raises(ValueError, match="ListID"):
            email_unsubscribe_event("SK-1", list_id=bad)
