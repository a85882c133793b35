"""Holes an attack pass found in the closed issues; each test fails while the hole is open.

Over real HTTP (live_server, requests): API keys, the steward API and the admin as the roles use them.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from django.urls import reverse

from customers.models import Individual
from hub.roles import STEWARD, VIEWER
from integrations.downstream.models import Delivery, DownstreamTarget
from integrations.models import ApiClient, InboundEvent
from tests.queue import run_queued
from tests.test_access import AdminBrowser, _event, _key_session, _post, _user
from tests.test_mdm import cim

pytestmark = pytest.mark.django_db(transaction=True)


def _steward_key(live_server) -> requests.Session:
    _, key = ApiClient.issue("steward-tool", ["steward", "read"], [])
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    session.base_url = live_server.url  # type: ignore[attr-defined]
    return session


def _two_people(live_server) -> tuple[Individual, Individual]:
    pos = _key_session(live_server, "pos", ["POS"])
    batch = [
        _event("e1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com")),
        _event("e2", "POS", "p-2", cim("Bob", "Ray", email="bob@example.com")),
    ]
    assert _post(pos, batch).status_code == 200
    run_queued()
    ann, bob = Individual.objects.order_by("pk")
    return ann, bob


# -- hole 6: bad input is a 4xx, never a 500 -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "merge", {"masterId": "\x00"}),
        ("post", "not-a-match", {"masterId": "\x00"}),
        ("post", "unmerge", {"externalIdType": "POS", "externalId": "\x00"}),
        # The serializer admits 100 characters; salutation is 40, name suffix 40, gender 32 in the table.
        ("put", "pins/salutation", {"value": "x" * 100}),
        ("put", "pins/gender", {"value": "x" * 100}),
    ],
)
def test_steward_api_refuses_odd_bodies_with_a_400_not_a_500(live_server, method, path, body):
    ann, _ = _two_people(live_server)
    steward = _steward_key(live_server)
    answer = getattr(steward, method)(
        f"{steward.base_url}/api/v1/individuals/{ann.master_id}/{path}", json=body, timeout=10
    )
    assert answer.status_code == 400, (answer.status_code, answer.text[:200])


def test_a_malformed_review_queue_cursor_is_a_400_not_a_500(live_server):
    _two_people(live_server)
    steward = _steward_key(live_server)
    # base64 of "p=2024": a well-formed cursor whose position is not a valid one.
    answer = steward.get(f"{steward.base_url}/api/v1/match-candidates", params={"cursor": "cD0yMDI0"}, timeout=10)
    assert answer.status_code == 400, (answer.status_code, answer.text[:200])


@pytest.mark.parametrize(
    ("model", "param", "value"),
    [
        ("marketing_cloud/ensnotification", "received_at__year", "0"),
        ("marketing_cloud/importjob", "started_at__year", "-1"),
        ("integrations/inboundevent", "received_at__year", "99999999999999999999"),
        ("integrations/syncrun", "started_at__year", "99999999999999999999"),
    ],
)
def test_a_viewer_with_an_odd_year_filter_gets_no_500(live_server, model, param, value):
    browser = AdminBrowser(live_server.url, *_user("viewer", VIEWER))
    answer = browser.session.get(f"{live_server.url}/admin/{model}/", params={param: value}, timeout=10)
    assert answer.status_code < 500, answer.status_code


def test_a_number_in_a_name_field_is_refused_at_intake_not_dead_lettered_later(live_server):
    """1e101 is 6 characters as sent; jsonb keeps it as a 102-digit number, over firstName's 100."""
    pos = _key_session(live_server, "pos", ["POS"])
    event = _event("e1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com"))
    body = json.dumps({"events": [event]}).replace('"Ann"', "1e101")
    answer = pos.post(
        f"{pos.base_url}/api/v1/events", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    run_queued()
    status = InboundEvent.objects.filter(external_id="p-1").values_list("status", flat=True).first()
    # Either refused at once (400), or accepted and applied: never a 200 that is then dead-lettered.
    assert answer.status_code == 400 or status != "dead", (answer.status_code, status)


# -- hole 1: a key speaks for its own source records only ------------------------------------------


def test_a_far_future_occurred_at_does_not_win_survivorship_forever(live_server):
    """A POS key dates its change 2099: a newer change from another source must still be able to win."""
    sf = _key_session(live_server, "sf", ["SALESFORCE"])
    pos = _key_session(live_server, "pos", ["POS"])
    assert _post(sf, [_event("s1", "SALESFORCE", "s-1", cim("Ann", "Lee", email="ann@example.com"))]).status_code == 200
    run_queued()
    ann = Individual.objects.get()
    squat = cim("Mallory", "Lee", email="ann@example.com")
    squat["externalIds"] = [{"externalId": ann.master_id, "externalIdType": "MDM"}]
    event = _event("p1", "POS", "evil-1", squat) | {"occurredAt": "2099-12-31T00:00:00Z"}
    answer = _post(pos, [event])
    run_queued()
    fix = _event("s2", "SALESFORCE", "s-1", cim("Ann", "Lee", email="ann@example.com"))
    fix["occurredAt"] = "2026-11-30T10:00:00Z"
    assert _post(sf, [fix]).status_code == 200
    run_queued()
    ann.refresh_from_db()
    # Either the far-future date is refused at intake, or it does not pin the name for 73 years.
    assert answer.status_code == 400 or ann.first_name == "Ann", (answer.status_code, ann.first_name)


# -- hole 2/4: only administrators decide where a target sends and with what credentials -----------


class _Recorder:
    """A local HTTP endpoint that records every request (path and body) and answers 200 with a token."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append((self.command, self.path, body))
                answer = json.dumps({"access_token": "t", "instance_url": "https://elsewhere.example"}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_PATCH = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_steward_cannot_send_the_salesforce_client_secret_to_a_webhook_host(live_server, settings):
    """url and secret are admin-only; kind decides whether the Salesforce OAuth credentials go to url."""
    settings.SF_CLIENT_ID, settings.SF_CLIENT_SECRET = "sf-client", "sf-client-secret-do-not-leak"
    partner = _Recorder()
    try:
        target = DownstreamTarget.objects.create(name="partner", url=partner.url)
        browser = AdminBrowser(live_server.url, *_user("steward", STEWARD))
        change = f"{live_server.url}{reverse('admin:downstream_downstreamtarget_change', args=[target.pk])}"
        browser.session.get(change, timeout=10)
        browser.session.post(
            change,
            data={
                "name": "partner",
                "kind": DownstreamTarget.SALESFORCE,
                "event_types": "[]",
                "enabled": "on",
                "csrfmiddlewaretoken": browser.session.cookies["csrftoken"],
            },
            headers={"Referer": change},
            allow_redirects=False,
            timeout=10,
        )
        pos = _key_session(live_server, "pos", ["POS"])
        assert _post(pos, [_event("e1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com"))]).status_code == 200
        run_queued()
        leaked = [r for r in partner.requests if b"sf-client-secret-do-not-leak" in r[2]]
        assert not leaked, f"the partner's host got the Salesforce client secret: {leaked[0][:2]}"
    finally:
        partner.server.shutdown()


def test_a_token_answer_cannot_point_the_personal_data_at_another_host(live_server, settings):
    """The REST calls go to the target's My Domain only, whatever instance_url the token endpoint names."""
    settings.SF_CLIENT_ID, settings.SF_CLIENT_SECRET = "sf-client", "sf-client-secret"
    token_host = _Recorder()  # answers every request with instance_url https://elsewhere.example
    try:
        DownstreamTarget.objects.create(name="crm", kind=DownstreamTarget.SALESFORCE, url=token_host.url)
        pos = _key_session(live_server, "pos", ["POS"])
        assert _post(pos, [_event("e1", "POS", "p-1", cim("Ann", "Lee", email="ann@example.com"))]).status_code == 200
        run_queued()
        assert [method for method, _, _ in token_host.requests] == ["POST"]  # the token request, nothing else
        delivery = Delivery.objects.get()
        assert delivery.status == Delivery.DEAD and "another host" in delivery.last_error
    finally:
        token_host.server.shutdown()
