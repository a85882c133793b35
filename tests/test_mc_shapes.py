"""The sandbox answers, and the hub reads, the shapes a real tenant uses (fixtures in tests/fixtures/).

Each fixture names its source. The sandbox's answers are compared with them over real HTTP, and
the hub's SOAP client reads the real-shaped envelopes from a plain HTTP server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
import requests
from defusedxml import ElementTree as SafeET

from integrations.marketing_cloud import soap
from integrations.marketing_cloud.poller import _next_page_path
from integrations.marketing_cloud.schema import INDIVIDUAL, DataExtensionField, DataExtensionSchema
from integrations.transport import TransportError
from sandboxes.marketing_cloud.server import MarketingCloudSandbox

FIXTURES = Path(__file__).parent / "fixtures" / "marketing_cloud"
MC_DATE = re.compile(r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}:\d{2} (AM|PM)$")
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PARTNER = "{http://exacttarget.com/wsdl/partnerAPI}"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def sandbox() -> Iterator[MarketingCloudSandbox]:
    with MarketingCloudSandbox() as server:
        yield server


def token(sandbox: MarketingCloudSandbox) -> str:
    body = {
        "grant_type": "client_credentials",
        "client_id": "sandbox-client-id",
        "client_secret": "sandbox-client-secret",
    }
    return requests.post(f"{sandbox.url}/v2/token", json=body, timeout=5).json()["access_token"]


@contextmanager
def serving(body: bytes, status: int = 200) -> Iterator[str]:
    """A plain HTTP server answering every POST with ``body``, as a tenant's endpoint would."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_row_read_has_the_real_answers_shape(sandbox):
    real = fixture("rowset_page.json")["response"]
    auth = {"Authorization": f"Bearer {token(sandbox)}"}
    rows = [{"keys": {"SubscriberKey": f"SK-{n}"}, "values": {"BirthDate": "2005-06-13"}} for n in range(3)]
    requests.post(f"{sandbox.url}/hub/v1/dataevents/key:Individual/rowset", json=rows, headers=auth, timeout=5)
    ours = requests.get(
        f"{sandbox.url}/data/v1/customobjectdata/key/Individual/rowset?$pageSize=2", headers=auth, timeout=5
    ).json()
    assert set(ours) == set(real)
    assert set(ours["links"]) == set(real["links"])
    for answer in (real, ours):
        token_link = rf"^/v1/customobjectdata/token/{answer['requestToken']}/rowset\?\$page=(\d+)$"
        assert re.match(token_link, answer["links"]["self"]) and re.match(token_link, answer["links"]["next"])
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{1,3}$", answer["tokenExpireDateUtc"])
        for item in answer["items"]:
            assert set(item) == {"keys", "values"}
            names = [*item["keys"], *item["values"]]
            assert names == [name.lower() for name in names]
            assert all(isinstance(value, str) for value in item["values"].values())
    real_dates = [v for item in real["items"] for v in item["values"].values() if "/" in v and "://" not in v]
    assert real_dates and all(MC_DATE.match(v) for v in real_dates)
    assert all(MC_DATE.match(item["values"]["birthdate"]) for item in ours["items"])
    assert ours["items"][0]["values"]["birthdate"] == "6/13/2005 12:00:00 AM"


def test_the_poller_follows_links_next_as_the_tenant_gives_it():
    real = fixture("rowset_page.json")["response"]
    assert _next_page_path(real["links"]["next"]) == f"/data{real['links']['next']}"
    assert _next_page_path(None) is None
    with pytest.raises(TransportError):
        _next_page_path("https://elsewhere.example.com/v1/customobjectdata/token/x/rowset?$page=2")
    with pytest.raises(TransportError):
        _next_page_path("/v1/customobjectdata/../../platform/v1/ens-callbacks")


def test_a_refused_rowset_has_the_real_10006_shape(sandbox):
    real = fixture("rowset_error_10006.json")
    auth = {"Authorization": f"Bearer {token(sandbox)}"}
    bad = [{"keys": {"SubscriberKey": "SK-1"}, "values": {"EmailAddress": "nope", "SubscriberId": "x"}}]
    response = requests.post(
        f"{sandbox.url}/hub/v1/dataevents/key:Individual/rowset", json=bad, headers=auth, timeout=5
    )
    assert response.status_code == real["status"]
    ours = response.json()
    assert set(ours) == set(real["response"]) and ours["errorcode"] == real["response"]["errorcode"]
    assert ours["documentation"] == real["response"]["documentation"] == ""
    message = rf"^Unable to save rows for data extension ID {UUID}$"
    assert re.match(message, ours["message"]) and re.match(message, real["response"]["message"])
    cause = re.compile(r"^(\w+): The value for column \[\1\] is not a valid ")
    for answer in (real["response"], ours):
        assert [set(item) for item in answer["additionalErrors"]] == [{"message", "errorcode", "documentation"}] * 2
        assert all(cause.match(item["message"]) and item["errorcode"] == 10000 for item in answer["additionalErrors"])
    # The email cause is word for word the tenant's.
    real_email = real["response"]["additionalErrors"][0]["message"]
    assert ours["additionalErrors"][0]["message"] == real_email.replace("Email:", "EmailAddress:").replace(
        "[Email]", "[EmailAddress]"
    )


def test_a_key_that_is_no_primary_key_is_refused_word_for_word(sandbox):
    real = fixture("rowset_error_primary_key.json")
    sandbox.declare(
        DataExtensionSchema(
            "Contacts",
            "Contacts",
            (
                DataExtensionField("Email", "EmailAddress", is_primary_key=True),
                DataExtensionField("FirstName", "Text", 50),
            ),
        )
    )
    response = requests.post(
        f"{sandbox.url}/hub/v1/dataevents/key:Contacts/rowset",
        json=real["request"],
        headers={"Authorization": f"Bearer {token(sandbox)}"},
        timeout=5,
    )
    assert (response.status_code, response.json()) == (real["status"], real["response"])


def _request_shape(body: bytes) -> tuple:
    root = SafeET.fromstring(body)
    request = root.find(f".//{PARTNER}RetrieveRequest")
    part = request.find(f"{PARTNER}Filter")
    return (
        root.find(".//{http://exacttarget.com}fueloauth") is not None,
        request.findtext(f"{PARTNER}ObjectType"),
        [p.text for p in request.findall(f"{PARTNER}Properties")],
        part.get("{http://www.w3.org/2001/XMLSchema-instance}type"),
        part.findtext(f"{PARTNER}Property"),
        part.findtext(f"{PARTNER}SimpleOperator"),
        part.findtext(f"{PARTNER}Value"),
    )


def test_the_hubs_soap_request_is_the_one_public_clients_send():
    real = (FIXTURES / "soap_retrieve_fields_request.xml").read_bytes()
    ours = soap._request_body(
        "ACCESS-TOKEN",
        "DataExtensionField",
        ["Name", "FieldType", "MaxLength", "IsPrimaryKey", "IsRequired", "DataExtension.CustomerKey"],
        "DataExtension.CustomerKey",
        "Individual",
    )
    assert _request_shape(ours) == _request_shape(real)


@pytest.mark.django_db  # the transport records each call's duration (a row)
def test_the_hub_reads_a_real_shaped_fields_answer_and_the_sandboxs_alike(sandbox):
    properties = ["Name", "FieldType", "MaxLength", "IsPrimaryKey", "IsRequired", "DataExtension.CustomerKey"]
    with serving((FIXTURES / "soap_retrieve_fields_response.xml").read_bytes()) as url:
        real = soap.retrieve(
            requests.Session(), url, "t", "DataExtensionField", properties,
            filter_property="DataExtension.CustomerKey", filter_value="Individual",
        )  # fmt: skip
    assert [(f["Name"], f["FieldType"], f["MaxLength"], f["IsPrimaryKey"]) for f in real] == [
        ("SubscriberKey", "Text", "254", "true"),
        ("GlobalPartyId", "Text", "64", "false"),
        ("ModifiedDate", "Date", "", "false"),
    ]
    assert {f["DataExtension.CustomerKey"] for f in real} == {"Individual"}
    ours = soap.retrieve(
        requests.Session(), f"{sandbox.url}/", token(sandbox), "DataExtensionField", properties,
        filter_property="DataExtension.CustomerKey", filter_value="Individual",
    )  # fmt: skip
    assert [f["Name"] for f in ours] == [f.name for f in INDIVIDUAL.fields]
    by_name = {f["Name"]: f for f in ours}
    for field in real:
        assert set(by_name[field["Name"]]) >= {
            "Name",
            "FieldType",
            "MaxLength",
            "IsPrimaryKey",
            "DataExtension.CustomerKey",
        }
        assert by_name[field["Name"]]["FieldType"] == field["FieldType"]
        assert by_name[field["Name"]]["IsPrimaryKey"] == field["IsPrimaryKey"]


@pytest.mark.django_db  # the transport records each call's duration (a row)
def test_a_login_failed_fault_is_a_permanent_error_from_the_tenant_and_the_sandbox(sandbox):
    with (
        serving((FIXTURES / "soap_login_failed.xml").read_bytes(), status=500) as url,
        pytest.raises(TransportError) as real,
    ):
        soap.retrieve(requests.Session(), url, "expired", "DataExtension", ["Name"])
    with pytest.raises(TransportError) as ours:
        soap.retrieve(requests.Session(), f"{sandbox.url}/", "expired", "DataExtension", ["Name"])
    for error in (real.value, ours.value):
        assert error.permanent and error.http_status == 500
        assert error.message == "SOAP fault q0:Security: Login Failed"
