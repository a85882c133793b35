"""The one transport layer: the status policy table, the request wrapper and the shared OAuth token.

Over real HTTP: the Marketing Cloud and Salesforce emulators (fault injection, token endpoints), and
small local servers for what the emulators never answer (redirects, HTTP-date Retry-After, HTML).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from django.db import connection
from django.utils import timezone

from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud import soap
from integrations.marketing_cloud.client import POLICY as MC_POLICY
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.models import AccessToken
from integrations.salesforce.client import POLICY as SF_POLICY
from integrations.salesforce.client import SalesforceClient
from integrations.transport import (
    DEFAULT_POLICY,
    CachedToken,
    FreshToken,
    PermanentError,
    StatusPolicy,
    TransientError,
    Verdict,
    parse_retry_after,
    raise_for_status,
    request,
)
from sandboxes.salesforce.server import SalesforceSandbox, SalesforceSandboxConfig

# Every call records its duration for /metrics (a row in the database).
pytestmark = pytest.mark.django_db

# ---------------------------------------------------------------------------
# The policy table
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (201, None),
        (204, None),
        (408, "transient"),
        (425, "transient"),
        (429, "transient"),
        (500, "transient"),
        (502, "transient"),
        (503, "transient"),
        (504, "transient"),
        (599, "transient"),
        (300, "permanent"),
        (301, "permanent"),
        (304, "permanent"),
        (307, "permanent"),
        (400, "permanent"),
        (401, "permanent"),
        (403, "permanent"),
        (404, "permanent"),
        (409, "permanent"),
        (422, "permanent"),
    ],
)
def test_the_one_status_table(status, expected):
    verdict = DEFAULT_POLICY.verdict(status)
    assert (None if verdict is None else "permanent" if verdict.permanent else "transient") == expected


def test_connectors_override_what_their_system_means_otherwise():
    # Salesforce: a spent request limit is a wait of five minutes; another 403 stays a refusal.
    limit = SF_POLICY.verdict(403, "REQUEST_LIMIT_EXCEEDED")
    assert limit is not None and not limit.permanent and limit.wait == 300
    assert SF_POLICY.verdict(403, "INSUFFICIENT_ACCESS_OR_READONLY").permanent
    assert SF_POLICY.verdict(503, "SERVER_UNAVAILABLE") == Verdict(permanent=False)
    # Marketing Cloud: a 429 naming no wait (50200, "temporarily blocked") waits a minute.
    assert MC_POLICY.verdict(429) == Verdict(permanent=False, wait=60.0)
    assert MC_POLICY.verdict(400).permanent
    # A (status, code) pair wins over the status alone.
    policy = StatusPolicy({404: Verdict(permanent=False), (404, "GONE"): Verdict(permanent=True)})
    assert not policy.verdict(404).permanent and policy.verdict(404, "GONE").permanent


def test_retry_after_in_seconds_and_as_an_http_date():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 120 ") == 120.0
    in_a_minute = email.utils.format_datetime(timezone.now() + dt.timedelta(seconds=60), usegmt=True)
    assert 55 <= parse_retry_after(in_a_minute) <= 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert parse_retry_after("soon") is None and parse_retry_after("") is None and parse_retry_after(None) is None


# ---------------------------------------------------------------------------
# The request wrapper over real HTTP
# ---------------------------------------------------------------------------
@contextmanager
def serving(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Iterator[tuple[str, list]]:
    """A local server answering every request with ``status``, ``body`` and ``headers``; records requests."""
    received: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            received.append((self.command, self.path, self.rfile.read(int(self.headers.get("Content-Length") or 0))))
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = _answer  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def _failure(url: str, **kwargs: Any) -> Exception:
    answer = request(requests.Session(), "POST", url, system="webhook", timeout=kwargs.pop("timeout", 5.0), what="POST")
    with pytest.raises((TransientError, PermanentError)) as caught:
        raise_for_status(answer, what="the system", label=answer.label(), **kwargs)
    return caught.value


def test_the_emulators_faults_map_onto_transient_and_permanent(sandbox):
    url = f"{sandbox.url}/hub/v1/dataevents/key:Individual/rows/SubscriberKey:SK-1"
    sandbox.inject("429", retry_after=7)
    throttled = _failure(url)
    assert isinstance(throttled, TransientError) and throttled.http_status == 429 and throttled.retry_after == 7
    sandbox.inject("503")
    unavailable = _failure(url)
    assert isinstance(unavailable, TransientError) and unavailable.message.startswith("the system answered 503 (")
    sandbox.inject("403")
    refused = _failure(url)
    assert isinstance(refused, PermanentError) and refused.message.startswith("the system refused with 403 (")
    assert refused.response_bytes and refused.response_bytes > 0

    sandbox.inject("reset")
    with pytest.raises(TransientError, match=r"^POST connection failed: "):
        request(requests.Session(), "POST", url, system="webhook", timeout=5.0, what="POST")
    sandbox.inject("timeout", delay=2.0)
    with pytest.raises(TransientError, match=r"^POST timed out after 0\.5s$"):
        request(requests.Session(), "POST", url, system="webhook", timeout=0.5, what="POST")


def test_an_http_date_retry_after_is_the_wait_and_the_policy_fills_in_when_none_is_given():
    when = email.utils.format_datetime(timezone.now() + dt.timedelta(seconds=90), usegmt=True)
    with serving(503, headers={"Retry-After": when}) as (url, _):
        assert 80 <= _failure(url).retry_after <= 90
    with serving(429, b'{"errorcode": 50200}') as (url, _):
        assert _failure(url, policy=MC_POLICY).retry_after == 60.0
        assert _failure(url, policy=MC_POLICY, retry_after=3.0).retry_after == 3.0  # the caller's own reading wins


def test_a_redirect_is_not_followed():
    with serving(200) as (elsewhere, reached), serving(307, headers={"Location": f"{elsewhere}/x"}) as (url, _):
        error = _failure(url)
    assert isinstance(error, PermanentError) and error.message.endswith("; redirects are not followed")
    assert reached == []


def test_an_answer_is_read_up_to_the_limit_and_counted():
    with serving(200, b"x" * 5000) as (url, _):
        answer = request(requests.Session(), "GET", url, system="webhook", timeout=5.0, max_bytes=1000)
    assert answer.truncated and answer.size == 1001 and len(answer.body) == 1000
    assert answer.describe() == "200 (over 1000 bytes)"
    with pytest.raises(ValueError):
        answer.json()


def test_a_request_that_cannot_be_sent_as_written_is_permanent():
    with pytest.raises(PermanentError, match="cannot be sent: MissingSchema"):
        request(
            requests.Session(), "GET", "mc.example.com/v2/token", system="webhook", timeout=1.0, what="token request"
        )


# ---------------------------------------------------------------------------
# What the connectors gain from it
# ---------------------------------------------------------------------------
def test_marketing_cloud_credentials_are_not_posted_where_a_redirect_points():
    with (
        serving(200, b'{"access_token": "stolen"}') as (elsewhere, reached),
        serving(307, headers={"Location": f"{elsewhere}/v2/token"}) as (auth, _),
    ):
        client = MarketingCloudClient(auth_base_url=auth, client_id="id", client_secret="mc-secret-do-not-leak")
        with pytest.raises(PermanentError, match="redirects are not followed"):
            client.token_info()
    assert reached == []


def test_a_malformed_marketing_cloud_url_is_a_permanent_failure_not_a_crash():
    client = MarketingCloudClient(auth_base_url="mc.example.com", client_id="id", client_secret="secret")
    with pytest.raises(PermanentError, match="^token request cannot be sent: MissingSchema$"):
        client.token_info()


def test_a_soap_endpoint_that_answers_a_404_page_is_a_permanent_failure():
    page = b"<html><body>Not Found</body></html>"
    with serving(404, page, {"Content-Type": "text/html"}) as (url, _), pytest.raises(PermanentError) as caught:
        soap.retrieve(requests.Session(), url, "token", "DataExtension", ["Name"])
    assert caught.value.http_status == 404


# ---------------------------------------------------------------------------
# The shared OAuth token
# ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_one_token_serves_every_client_and_concurrent_workers_fetch_it_once(sandbox):
    first, second = MarketingCloudClient.from_settings(), MarketingCloudClient.from_settings()
    first.upsert_row("Individual", "SubscriberKey", "SK-1", {"GlobalPartyId": "a"})
    second.upsert_row("Individual", "SubscriberKey", "SK-2", {"GlobalPartyId": "b"})
    assert sandbox.count("POST", "/v2/token") == 1

    AccessToken.objects.filter(system=MARKETING_CLOUD).update(expires_at=timezone.now())  # expired for everyone
    start = threading.Barrier(4)
    tokens: list[str] = []

    def worker() -> None:
        try:
            start.wait()
            tokens.append(MarketingCloudClient.from_settings().get_token().access_token)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sandbox.count("POST", "/v2/token") == 2  # one refresh, under the row lock, for all four
    assert len(tokens) == 4 and len(set(tokens)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_refused_token_is_fetched_again_once(sandbox):
    client = MarketingCloudClient.from_settings()
    sandbox.inject("401")  # the session is revoked: the call is repeated with a new token
    client.upsert_row("Individual", "SubscriberKey", "SK-1", {"GlobalPartyId": "a"})
    assert sandbox.count("POST", "/v2/token") == 2
    sandbox.inject("401", count=2)  # refused again with the new one: permanent, no loop
    with pytest.raises(PermanentError) as caught:
        client.upsert_row("Individual", "SubscriberKey", "SK-1", {"GlobalPartyId": "a"})
    assert caught.value.http_status == 401 and sandbox.count("POST", "/v2/token") == 3


@pytest.mark.django_db
def test_only_the_refused_token_is_dropped():
    fetched: list[str] = []

    def fetch() -> FreshToken:
        fetched.append(f"t{len(fetched) + 1}")
        return FreshToken(access_token=fetched[-1], lifetime=dt.timedelta(minutes=20))

    tokens = CachedToken("TEST", fetch)
    assert tokens.get().access_token == "t1"
    tokens.invalidate("t1")
    assert tokens.get().access_token == "t2"
    tokens.invalidate("t1")  # a worker that was refused t1 late: t2, fetched meanwhile, stays
    assert tokens.get().access_token == "t2" and fetched == ["t1", "t2"]


@pytest.fixture
def salesforce(settings):
    config = SalesforceSandboxConfig()
    settings.SF_CLIENT_ID, settings.SF_CLIENT_SECRET = config.client_id, config.client_secret
    with SalesforceSandbox(config=config) as server:
        yield server


@pytest.mark.django_db(transaction=True)
def test_salesforce_keeps_one_token_per_org_through_the_same_helper(salesforce):
    first = SalesforceClient(salesforce.url, org_key="1", session=requests.Session())
    again = SalesforceClient(salesforce.url, org_key="1", session=requests.Session())
    other_org = SalesforceClient(salesforce.url, org_key="2", session=requests.Session())
    first.upsert("m-1", {"LastName": "Lee"})
    again.upsert("m-2", {"LastName": "Lee"})
    assert salesforce.count("POST", "/services/oauth2/token") == 1
    other_org.upsert("m-3", {"LastName": "Lee"})
    assert salesforce.count("POST", "/services/oauth2/token") == 2
    assert set(AccessToken.objects.values_list("system", flat=True)) == {"SALESFORCE:1", "SALESFORCE:2"}
    salesforce.expire_tokens()
    first.upsert("m-1", {"LastName": "King"})  # INVALID_SESSION_ID: one fresh token
    assert salesforce.count("POST", "/services/oauth2/token") == 3

    salesforce.inject("403-limit")
    with pytest.raises(TransientError) as caught:
        first.upsert("m-1", {"LastName": "King"})
    assert caught.value.error_code == "REQUEST_LIMIT_EXCEEDED" and caught.value.retry_after == 300
