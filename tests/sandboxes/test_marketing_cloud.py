"""Tests of the Marketing Cloud sandbox over real HTTP, and of the Journey Builder signer.

These need no database and no Django settings: the sandbox is plain stdlib, started per test on a
free port.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from defusedxml import ElementTree as SafeET

from integrations.marketing_cloud.schema import INDIVIDUAL, DataExtensionField, DataExtensionSchema
from sandboxes.marketing_cloud.journey import (
    DEMO_EVENT_DEFINITION_KEY,
    DEMO_SUBSCRIBERS,
    BindingError,
    Journey,
    binding_path,
    build_execute_payload,
    entry_source_bindings,
    send_demo,
    sign_execute,
)
from sandboxes.marketing_cloud.server import MarketingCloudSandbox, SandboxConfig

DE = "Individual"
# At least 32 bytes, as RFC 7518 asks of HS256 keys (PyJWT warns about shorter ones).
JWT_SECRET = "sandbox-journey-builder-signing-secret-0123"
ROWS = f"/hub/v1/dataevents/key:{DE}/rows"
ROWSET = f"/hub/v1/dataevents/key:{DE}/rowset"
QUERY = f"/data/v1/customobjectdata/key/{DE}/rowset"


@pytest.fixture
def sandbox() -> Iterator[MarketingCloudSandbox]:
    server = MarketingCloudSandbox(config=SandboxConfig(account_id="500001", seed=7)).start()
    try:
        yield server
    finally:
        server.stop()


def get_token(sandbox: MarketingCloudSandbox, **overrides: object) -> str:
    body = {
        "grant_type": "client_credentials",
        "client_id": sandbox.config.client_id,
        "client_secret": sandbox.config.client_secret,
        "account_id": "500001",
        **overrides,
    }
    response = requests.post(f"{sandbox.url}/v2/token", json=body, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def put_row(
    sandbox: MarketingCloudSandbox, token: str, key: str, values: dict, timeout: float = 5
) -> requests.Response:
    return requests.put(
        f"{sandbox.url}{ROWS}/SubscriberKey:{key}", json={"values": values}, headers=auth(token), timeout=timeout
    )


# -- token endpoint ---------------------------------------------------------------------------


def test_token_success_shape(sandbox: MarketingCloudSandbox) -> None:
    response = requests.post(
        f"{sandbox.url}/v2/token",
        json={
            "grant_type": "client_credentials",
            "client_id": "sandbox-client-id",
            "client_secret": "sandbox-client-secret",
            "account_id": "500001",
        },
        timeout=5,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    data = response.json()
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 1080
    assert data["rest_instance_url"] == sandbox.url + "/"
    assert data["soap_instance_url"] == sandbox.url + "/"
    assert "data_extensions_write" in data["scope"]
    assert len(data["access_token"]) > 20
    # Omitting account_id is allowed: SFMC then uses the package's default business unit.
    assert get_token(sandbox, account_id=None) != data["access_token"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            {"grant_type": "password", "client_id": "sandbox-client-id", "client_secret": "x"},
            400,
            "unsupported_grant_type",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "sandbox-client-id", "client_secret": "no"},
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "nope", "client_secret": "sandbox-client-secret"},
            401,
            "invalid_client",
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": "sandbox-client-id",
                "client_secret": "sandbox-client-secret",
                "account_id": "999999",
            },
            401,
            "invalid_client",
        ),
    ],
)
def test_token_errors(sandbox: MarketingCloudSandbox, body: dict, status: int, error: str) -> None:
    response = requests.post(f"{sandbox.url}/v2/token", json=body, timeout=5)
    assert response.status_code == status
    data = response.json()
    assert data["error"] == error
    assert data["error_description"]
    assert data["error_uri"] == "https://developer.salesforce.com"


def test_token_body_not_json(sandbox: MarketingCloudSandbox) -> None:
    response = requests.post(f"{sandbox.url}/v2/token", data=b"grant_type=client_credentials", timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# -- data extension rows ----------------------------------------------------------------------


def test_put_upserts_and_merges(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    # Field names are matched case-insensitively and stored under their declared names.
    values = {"emailaddress": "a@example.com", "SubscriberId": 31, "Gender": None}
    first = put_row(sandbox, token, "SK-1", values)
    assert first.status_code == 200
    assert first.json() == {
        "keys": {"SubscriberKey": "SK-1"},
        "values": {"EmailAddress": "a@example.com", "SubscriberId": "31", "Gender": ""},
    }
    second = put_row(sandbox, token, "SK-1", {"FirstName": "Ann"})
    assert second.json()["values"]["FirstName"] == "Ann"
    assert second.json()["values"]["EmailAddress"] == "a@example.com"
    assert sandbox.rows(DE) == {
        "SK-1": {
            "EmailAddress": "a@example.com",
            "SubscriberId": "31",
            "Gender": "",
            "SubscriberKey": "SK-1",
            "FirstName": "Ann",
        }
    }


def test_put_key_value_is_url_decoded(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    response = requests.put(
        f"{sandbox.url}{ROWS}/SubscriberKey:a%2Fb%40example.com", json={"values": {}}, headers=auth(token), timeout=5
    )
    assert response.status_code == 200
    assert list(sandbox.rows(DE)) == ["a/b@example.com"]
    # The key value is masked in the log, so personal data never lands there.
    assert sandbox.requests_log()[-1]["path"] == f"{ROWS}/SubscriberKey:*"


def test_put_validation_errors(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    url = f"{sandbox.url}{ROWS}/SubscriberKey:SK-1"
    not_json = requests.put(url, data=b"{nope", headers=auth(token), timeout=5)
    assert not_json.status_code == 400
    assert not_json.json()["errorcode"] == 10004
    assert not_json.json()["message"] == "Invalid message format"
    missing = requests.put(url, json={"value": {}}, headers=auth(token), timeout=5)
    assert missing.status_code == 400
    assert missing.json() == {
        "message": "Missing required field: values",
        "errorcode": 10002,
        "documentation": missing.json()["documentation"],
    }
    bad_type = requests.put(url, json={"values": {"Tags": ["a"]}}, headers=auth(token), timeout=5)
    assert bad_type.status_code == 400
    assert bad_type.json()["errorcode"] == 10001
    assert sandbox.rows(DE) == {}


def test_rowset_post_upserts_each(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    items = [
        {"keys": {"SubscriberKey": "SK-1"}, "values": {"EmailAddress": "one@example.com"}},
        {"keys": {"SubscriberKey": "SK-2"}, "values": {"EmailAddress": "two@example.com"}},
    ]
    response = requests.post(f"{sandbox.url}{ROWSET}", json=items, headers=auth(token), timeout=5)
    assert response.status_code == 200
    assert response.json() == items
    rows = sandbox.rows(DE)
    assert list(rows) == ["SK-1", "SK-2"]
    assert rows["SK-2"] == {"EmailAddress": "two@example.com", "SubscriberKey": "SK-2"}
    bad = requests.post(f"{sandbox.url}{ROWSET}", json=[{"keys": {"SubscriberKey": "SK-3"}}], headers=auth(token))
    assert bad.status_code == 400
    assert bad.json()["errorcode"] == 10002


PURCHASES = DataExtensionSchema(
    "Purchases",
    "Purchases",
    (
        DataExtensionField("Store", "Number", is_primary_key=True),
        DataExtensionField("Receipt", "Text", 20, is_primary_key=True),
        DataExtensionField("Total", "Decimal", scale=2),
        DataExtensionField("Paid", "Boolean"),
    ),
)


def test_rowset_with_compound_key(sandbox: MarketingCloudSandbox) -> None:
    sandbox.declare(PURCHASES)
    token = get_token(sandbox)
    items = [{"keys": {"Store": "12", "Receipt": "900"}, "values": {"Total": 19.5, "Paid": True}}]
    url = f"{sandbox.url}/hub/v1/dataevents/key:Purchases/rowset"
    assert requests.post(url, json=items, headers=auth(token), timeout=5).status_code == 200
    assert sandbox.rows("Purchases") == {"12|900": {"Total": "19.5", "Paid": "True", "Store": "12", "Receipt": "900"}}
    # Both key fields are needed, and only key fields may be keys.
    half = requests.post(url, json=[{"keys": {"Store": "12"}, "values": {}}], headers=auth(token), timeout=5)
    assert half.status_code == 400 and half.json()["errorcode"] == 10000


def test_get_rowset_pages_and_lowercases(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    items = [
        {"keys": {"SubscriberKey": f"SK-{n:03d}"}, "values": {"EmailAddress": f"user{n}@example.com"}}
        for n in range(120)
    ]
    assert requests.post(f"{sandbox.url}{ROWSET}", json=items, headers=auth(token), timeout=5).status_code == 200

    seen = []
    pages = 0
    with requests.Session() as session:
        session.headers.update(auth(token))
        page = 1
        while True:
            response = session.get(f"{sandbox.url}{QUERY}", params={"$page": page, "$pageSize": 50}, timeout=5)
            assert response.status_code == 200
            data = response.json()
            pages += 1
            assert data["count"] == 120
            assert data["page"] == page
            assert data["pageSize"] == 50
            assert data["customObjectKey"] == DE
            assert data["requestToken"] and data["customObjectId"] and data["tokenExpireDateUtc"]
            seen.extend(data["items"])
            if "next" not in data["links"]:
                break
            assert "$page=" + str(page + 1) in data["links"]["next"]
            assert data["links"]["next"] == f"/v1/customobjectdata/token/{data['requestToken']}/rowset?$page={page + 1}"
            page += 1
    assert pages == 3
    assert len(seen) == 120
    # Every declared field comes back, lower-cased, "" when empty (as a tenant answers).
    assert seen[0]["keys"] == {"subscriberkey": "SK-000"}
    assert seen[0]["values"]["emailaddress"] == "user0@example.com"
    assert set(seen[0]["values"]) == {f.name.lower() for f in INDIVIDUAL.fields if not f.is_primary_key}
    assert seen[0]["values"]["firstname"] == ""
    assert seen[-1]["keys"] == {"subscriberkey": "SK-119"}


def test_get_rowset_filter_and_order(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    for key, modified in [("A", "2025-12-31T10:00:00Z"), ("B", "2026-03-01T00:00:00Z"), ("C", "2026-01-15T08:00:00Z")]:
        assert put_row(sandbox, token, key, {"ModifiedDate": modified}).status_code == 200
    response = requests.get(
        f"{sandbox.url}{QUERY}",
        params={"$filter": "ModifiedDate gt '2026-01-01T00:00:00'", "$orderBy": "ModifiedDate asc"},
        headers=auth(token),
        timeout=5,
    )
    assert response.status_code == 200
    data = response.json()
    assert data["count"] == 2
    assert [item["keys"]["subscriberkey"] for item in data["items"]] == ["C", "B"]
    bad = requests.get(f"{sandbox.url}{QUERY}", params={"$filter": "ModifiedDate >> 1"}, headers=auth(token), timeout=5)
    assert bad.status_code == 400


def test_get_unknown_data_extension_is_refused(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    response = requests.get(f"{sandbox.url}/data/v1/customobjectdata/key/Nothing/rowset", headers=auth(token))
    assert response.status_code == 400
    assert response.json() == {
        "message": "Data extension with external key 'Nothing' was not found.",
        "errorcode": 10000,
        "documentation": "",
    }


# -- a strict data extension, as a tenant's --------------------------------------------------


def refused(response: requests.Response) -> list[str]:
    """The additionalErrors messages of a 10006 answer, after checking its shape."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["errorcode"] == 10006 and body["message"].startswith("Unable to save rows for data extension ID ")
    assert set(body) == {"message", "errorcode", "documentation", "additionalErrors"}
    return [item["message"] for item in body["additionalErrors"]]


def test_unknown_data_extension_key_is_refused_everywhere(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    put = requests.put(
        f"{sandbox.url}/hub/v1/dataevents/key:Individuals/rows/SubscriberKey:SK-1",
        json={"values": {"FirstName": "Ada"}},
        headers=auth(token),
        timeout=5,
    )
    rowset = requests.post(
        f"{sandbox.url}/hub/v1/dataevents/key:Individuals/rowset",
        json=[{"keys": {"SubscriberKey": "SK-1"}, "values": {}}],
        headers=auth(token),
        timeout=5,
    )
    for response in (put, rowset):
        assert response.status_code == 400
        assert response.json()["errorcode"] == 10000
        assert "Individuals" in response.json()["message"]
    assert sandbox.rows("Individuals") == {} and sandbox.rows(DE) == {}


def test_unknown_column_wrong_type_and_too_long_are_refused_with_additional_errors(
    sandbox: MarketingCloudSandbox,
) -> None:
    token = get_token(sandbox)
    response = put_row(
        sandbox,
        token,
        "SK-1",
        {
            "MasterId": "m-1",
            "SubscriberId": "abc",
            "BirthDate": "someday",
            "EmailAddress": "not-an-email",
            "FirstName": "A" * 101,
        },
    )
    assert refused(response) == [
        "MasterId: The column [MasterId] does not exist in the data extension.",
        "SubscriberId: The value for column [SubscriberId] is not a valid number.",
        "BirthDate: The value for column [BirthDate] is not a valid date.",
        "EmailAddress: The value for column [EmailAddress] is not a valid email address. Parse error "
        "[InvalidEmailAddress]",
        "FirstName: The value for column [FirstName] exceeds the maximum length of 100 characters.",
    ]
    assert sandbox.rows(DE) == {}
    # Exactly at the limit is fine.
    assert put_row(sandbox, token, "SK-1", {"FirstName": "A" * 100}).status_code == 200


def test_a_rowset_with_one_bad_row_fails_as_a_whole(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    items = [
        {"keys": {"SubscriberKey": "SK-1"}, "values": {"GlobalPartyId": "m-1"}},
        {"keys": {"SubscriberKey": "SK-2"}, "values": {"GlobalPartyID ": "m-2"}},  # trailing space: no such field
        {"keys": {"SubscriberKey": "SK-3"}, "values": {"GlobalPartyId": "m-3"}},
    ]
    response = requests.post(f"{sandbox.url}{ROWSET}", json=items, headers=auth(token), timeout=5)
    assert refused(response) == ["GlobalPartyID : The column [GlobalPartyID ] does not exist in the data extension."]
    assert sandbox.rows(DE) == {}


def test_a_wrong_primary_key_name_is_refused_as_a_tenant_refuses_it(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    response = requests.put(
        f"{sandbox.url}{ROWS}/EmailAddress:a@example.com", json={"values": {}}, headers=auth(token), timeout=5
    )
    assert response.status_code == 400
    assert response.json() == {
        "message": "Primary key 'emailaddress' does not exist.",
        "errorcode": 10000,
        "documentation": "",
    }


def test_required_fields_are_required_on_insert_not_on_update(sandbox: MarketingCloudSandbox) -> None:
    sandbox.declare(
        DataExtensionSchema(
            "Leads",
            "Leads",
            (
                DataExtensionField("LeadKey", "Text", 50, is_primary_key=True),
                DataExtensionField("Email", "EmailAddress", is_required=True),
                DataExtensionField("Score", "Number"),
            ),
        )
    )
    token = get_token(sandbox)
    url = f"{sandbox.url}/hub/v1/dataevents/key:Leads/rows/LeadKey:L-1"
    missing = requests.put(url, json={"values": {"Score": 3}}, headers=auth(token), timeout=5)
    assert refused(missing) == ["Email: The value for column [Email] is required."]
    assert requests.put(url, json={"values": {"Email": "l@example.com"}}, headers=auth(token), timeout=5).ok
    assert requests.put(url, json={"values": {"Score": 4}}, headers=auth(token), timeout=5).ok
    emptied = requests.put(url, json={"values": {"Email": ""}}, headers=auth(token), timeout=5)
    assert refused(emptied) == ["Email: The value for column [Email] is required."]
    assert sandbox.rows("Leads") == {"L-1": {"Email": "l@example.com", "Score": "4", "LeadKey": "L-1"}}


def test_declaring_through_the_control_endpoint(sandbox: MarketingCloudSandbox) -> None:
    declaration = {"key": "Prefs", "fields": [{"name": "Key", "isPrimaryKey": True, "maxLength": 10}]}
    assert requests.post(f"{sandbox.url}/__sandbox/data-extensions", json=declaration, timeout=5).ok
    listed = requests.get(f"{sandbox.url}/__sandbox/data-extensions", timeout=5).json()
    assert [d["key"] for d in listed] == ["Individual", "Prefs"]
    assert listed[1]["fields"][0] == {
        "name": "Key",
        "fieldType": "Text",
        "maxLength": 10,
        "isRequired": True,
        "isPrimaryKey": True,
        "scale": 0,
    }
    bad = requests.post(f"{sandbox.url}/__sandbox/data-extensions", json={"key": "X", "fields": []}, timeout=5)
    assert bad.status_code == 400
    sandbox.reset()
    assert [schema.key for schema in sandbox.data_extensions()] == ["Individual"]


def test_a_token_without_the_write_scope_cannot_write(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox, scope="data_extensions_read")
    response = put_row(sandbox, token, "SK-1", {"FirstName": "Ada"})
    assert response.status_code == 403 and response.json()["errorcode"] == 20000
    read = requests.get(f"{sandbox.url}{QUERY}", headers=auth(token), timeout=5)
    assert read.status_code == 200
    sandbox.configure(scope="data_extensions_write")
    granted = requests.post(
        f"{sandbox.url}/v2/token",
        json={
            "grant_type": "client_credentials",
            "client_id": "sandbox-client-id",
            "client_secret": "sandbox-client-secret",
        },
        timeout=5,
    ).json()
    assert granted["scope"] == "data_extensions_write"


# -- row reads as a tenant answers them -------------------------------------------------------

MC_TIME = dt.timezone(dt.timedelta(hours=-6))  # stated independently of the code under test


def test_dates_are_stored_and_read_in_marketing_cloud_time(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    put_row(sandbox, token, "A", {"ModifiedDate": "2024-06-23T06:00:00Z"})  # an instant: midnight in MC time
    put_row(sandbox, token, "B", {"ModifiedDate": "2024-06-23T13:05:09"})  # no offset: MC time as it is
    put_row(sandbox, token, "C", {"ModifiedDate": "7/4/2024 9:30:00 PM"})  # Marketing Cloud's own format
    # July: Chicago would be on daylight saving time (UTC-5); Marketing Cloud stays at UTC-6.
    put_row(sandbox, token, "D", {"ModifiedDate": "2024-07-04T03:30:00+00:00"})
    data = requests.get(f"{sandbox.url}{QUERY}", headers=auth(token), timeout=5).json()
    dates = {item["keys"]["subscriberkey"]: item["values"]["modifieddate"] for item in data["items"]}
    assert dates == {
        "A": "6/23/2024 12:00:00 AM",
        "B": "6/23/2024 1:05:09 PM",
        "C": "7/4/2024 9:30:00 PM",
        "D": "7/3/2024 9:30:00 PM",
    }
    # A filter literal is Marketing Cloud time too, and dates compare as dates, not as text.
    stamp = dt.datetime(2024, 6, 23, 12, 0, tzinfo=MC_TIME).strftime("%Y-%m-%dT%H:%M:%S")
    later = requests.get(
        f"{sandbox.url}{QUERY}",
        params={"$filter": f"ModifiedDate gt '{stamp}'", "$orderBy": "ModifiedDate desc"},
        headers=auth(token),
        timeout=5,
    ).json()
    assert [item["keys"]["subscriberkey"] for item in later["items"]] == ["C", "D", "B"]


def test_pages_hold_2500_rows_and_follow_the_request_token(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    for start in range(0, 2501, 50):
        items = [
            {"keys": {"SubscriberKey": f"SK-{n:05d}"}, "values": {"SubscriberId": n}}
            for n in range(start, min(start + 50, 2501))
        ]
        assert requests.post(f"{sandbox.url}{ROWSET}", json=items, headers=auth(token), timeout=10).ok
    first = requests.get(f"{sandbox.url}{QUERY}", headers=auth(token), timeout=10).json()
    assert (first["pageSize"], first["count"], len(first["items"])) == (2500, 2501, 2500)
    # What changes after the first page does not move rows between pages of this read.
    put_row(sandbox, token, "SK-00000", {"SubscriberId": 1})
    second = requests.get(f"{sandbox.url}/data{first['links']['next']}", headers=auth(token), timeout=10).json()
    assert [item["keys"]["subscriberkey"] for item in second["items"]] == ["SK-02500"]
    assert second["page"] == 2 and "next" not in second["links"]
    unknown = requests.get(
        f"{sandbox.url}/data/v1/customobjectdata/token/nope/rowset?$page=2", headers=auth(token), timeout=5
    )
    assert unknown.status_code == 400 and unknown.json()["errorcode"] == 10000


# -- SOAP: the data extension's fields --------------------------------------------------------

FIELDS_REQUEST = Path(__file__).parent.parent / "fixtures" / "marketing_cloud" / "soap_retrieve_fields_request.xml"


def soap_post(sandbox: MarketingCloudSandbox, body: str) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/Service.asmx",
        data=body.encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "Retrieve"},
        timeout=5,
    )


def test_soap_retrieve_of_the_fields_answers_the_declaration(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    response = soap_post(sandbox, FIELDS_REQUEST.read_text().replace("ACCESS-TOKEN", token))
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/xml")
    root = SafeET.fromstring(response.content)
    assert root.tag == "{http://www.w3.org/2003/05/soap-envelope}Envelope"
    ns = {"p": "http://exacttarget.com/wsdl/partnerAPI", "s": "http://www.w3.org/2003/05/soap-envelope"}
    message = root.find("s:Body/p:RetrieveResponseMsg", ns)
    assert message.findtext("p:OverallStatus", namespaces=ns) == "OK"
    results = message.findall("p:Results", ns)
    assert [r.get("{http://www.w3.org/2001/XMLSchema-instance}type") for r in results] == ["DataExtensionField"] * len(
        INDIVIDUAL.fields
    )
    first = results[0]
    assert first.findtext("p:Name", namespaces=ns) == "SubscriberKey"
    assert first.findtext("p:IsPrimaryKey", namespaces=ns) == "true"
    assert first.findtext("p:MaxLength", namespaces=ns) == "254"
    assert first.findtext("p:DataExtension/p:CustomerKey", namespaces=ns) == "Individual"
    other = soap_post(
        sandbox, FIELDS_REQUEST.read_text().replace("ACCESS-TOKEN", token).replace(">Individual<", ">Nope<")
    )
    assert SafeET.fromstring(other.content).find("s:Body/p:RetrieveResponseMsg", ns).findall("p:Results", ns) == []


def test_soap_with_a_bad_token_is_a_login_failed_fault(sandbox: MarketingCloudSandbox) -> None:
    response = soap_post(sandbox, FIELDS_REQUEST.read_text())
    assert response.status_code == 500
    fault = SafeET.fromstring(response.content).find(
        "{http://schemas.xmlsoap.org/soap/envelope/}Body/{http://schemas.xmlsoap.org/soap/envelope/}Fault"
    )
    assert (fault.findtext("faultcode"), fault.findtext("faultstring")) == ("q0:Security", "Login Failed")
    unreadable = soap_post(sandbox, "<not-soap/>")
    assert unreadable.status_code == 500


def test_soap_refuses_an_unknown_property_as_the_tenant_does(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    body = FIELDS_REQUEST.read_text().replace("ACCESS-TOKEN", token).replace(">MaxLength<", ">Length<")
    status = SafeET.fromstring(soap_post(sandbox, body).content).findtext(
        "{http://www.w3.org/2003/05/soap-envelope}Body/{http://exacttarget.com/wsdl/partnerAPI}RetrieveResponseMsg/"
        "{http://exacttarget.com/wsdl/partnerAPI}OverallStatus"
    )
    assert status.startswith("Error: The Request Property(s) Length do not match")


# -- auth and routing -------------------------------------------------------------------------


def test_rest_calls_need_a_valid_token(sandbox: MarketingCloudSandbox) -> None:
    url = f"{sandbox.url}{ROWS}/SubscriberKey:SK-1"
    for headers in ({}, auth("made-up-token"), {"Authorization": "Basic abc"}):
        response = requests.put(url, json={"values": {}}, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {
            "message": "Not Authorized",
            "errorcode": 0,
            "documentation": "https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm",
        }
    token = get_token(sandbox)
    assert requests.put(url, json={"values": {}}, headers=auth(token), timeout=5).status_code == 200
    sandbox.expire_tokens()
    assert requests.put(url, json={"values": {}}, headers=auth(token), timeout=5).status_code == 401


def test_token_ttl_expiry() -> None:
    with MarketingCloudSandbox(config=SandboxConfig(token_ttl=0)) as server:
        token = get_token(server, account_id=None)
        response = requests.get(f"{server.url}{QUERY}", headers=auth(token), timeout=5)
        assert response.status_code == 401


def test_unknown_path_and_wrong_method(sandbox: MarketingCloudSandbox) -> None:
    missing = requests.get(f"{sandbox.url}/hub/v1/nothing", timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {"message": "Not Found", "errorcode": 404, "documentation": ""}
    wrong = requests.get(f"{sandbox.url}/v2/token", timeout=5)
    assert wrong.status_code == 405
    assert wrong.json()["errorcode"] == 405


# -- fault injection --------------------------------------------------------------------------


def test_fault_429_has_retry_after(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    sandbox.inject("429", retry_after=7)
    response = put_row(sandbox, token, "SK-1", {})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["errorcode"] == 50100
    assert response.json()["retryAfter"] == 7
    sandbox.inject("429")
    assert put_row(sandbox, token, "SK-1", {}).headers["Retry-After"] == "5"
    assert put_row(sandbox, token, "SK-1", {}).status_code == 200


def test_fault_429_blocked_has_no_retry_after(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    sandbox.inject("429-blocked")
    response = put_row(sandbox, token, "SK-1", {})
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.json()["errorcode"] == 50200
    assert response.json()["message"] == "Your requests are temporarily blocked."


@pytest.mark.parametrize(
    ("kind", "status", "errorcode"),
    [("500", 500, 50000), ("503", 503, 50000), ("400", 400, 10005), ("403", 403, 20000)],
)
def test_simple_faults(sandbox: MarketingCloudSandbox, kind: str, status: int, errorcode: int) -> None:
    token = get_token(sandbox)
    sandbox.inject(kind)
    response = put_row(sandbox, token, "SK-1", {"FirstName": "1"})
    assert response.status_code == status
    assert response.json()["errorcode"] == errorcode
    assert set(response.json()) == {"message", "errorcode", "documentation"}
    # Faults are answered before normal handling: the row was not written.
    assert sandbox.rows(DE) == {}


def test_fault_401_invalidates_tokens(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    sandbox.inject("401")
    response = put_row(sandbox, token, "SK-1", {})
    assert response.status_code == 401
    assert response.json()["errorcode"] == 0
    assert put_row(sandbox, token, "SK-1", {}).status_code == 401
    assert put_row(sandbox, get_token(sandbox), "SK-1", {}).status_code == 200


def test_fault_reset_drops_connection(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    sandbox.inject("reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        put_row(sandbox, token, "SK-1", {})
    assert put_row(sandbox, token, "SK-1", {}).status_code == 200
    assert [entry["status"] for entry in sandbox.requests_log()][-2:] == [0, 200]


def test_fault_timeout_outlasts_client_timeout(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    sandbox.inject("timeout", delay=1)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        put_row(sandbox, token, "SK-1", {}, timeout=0.3)
    assert time.monotonic() - started < 0.9


def test_fault_count_and_path_contains(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    sandbox.inject("500", count=2, path_contains="/rowset")
    sandbox.inject("503")
    # The PUT path has no "/rowset", so it skips the first fault and takes the second.
    assert put_row(sandbox, token, "SK-1", {}).status_code == 503
    assert put_row(sandbox, token, "SK-1", {}).status_code == 200
    items = [{"keys": {"SubscriberKey": "SK-2"}, "values": {}}]
    statuses = [
        requests.post(f"{sandbox.url}{ROWSET}", json=items, headers=auth(token), timeout=5).status_code
        for _ in range(3)
    ]
    assert statuses == [500, 500, 200]
    assert sandbox.faults() == []


def test_token_endpoint_only_faulted_when_targeted(sandbox: MarketingCloudSandbox) -> None:
    sandbox.inject("500")
    get_token(sandbox)  # generic faults leave the token endpoint alone
    sandbox.clear_faults()
    sandbox.inject("503", path_contains="/v2/token")
    response = requests.post(f"{sandbox.url}/v2/token", json={}, timeout=5)
    assert response.status_code == 503
    get_token(sandbox)


def test_fail_rate_and_latency() -> None:
    config = SandboxConfig(fail_rate=1.0, latency_ms=50)
    with MarketingCloudSandbox(config=config) as server:
        started = time.monotonic()
        token = get_token(server, account_id=None)  # fail_rate spares the token endpoint
        assert time.monotonic() - started >= 0.05
        assert put_row(server, token, "SK-1", {}).status_code == 500
        server.configure(fail_rate=0.0, latency_ms=0)
        assert put_row(server, token, "SK-1", {}).status_code == 200


def test_inject_rejects_unknown_kind(sandbox: MarketingCloudSandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.inject("418")


# -- log and control endpoints ----------------------------------------------------------------


def test_requests_log_and_count(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    put_row(sandbox, token, "someone@example.com", {"EmailAddress": "someone@example.com"})
    requests.get(f"{sandbox.url}/__sandbox/log", timeout=5)  # control calls are not logged
    log = sandbox.requests_log()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("POST", "/v2/token", 200),
        ("PUT", f"{ROWS}/SubscriberKey:*", 200),
    ]
    assert all(isinstance(e["time"], float) for e in log)
    assert "example.com" not in repr(log)
    assert sandbox.count("put", ROWS) == 1
    assert sandbox.count("POST", "/v2/") == 1
    assert sandbox.count("GET", "/") == 0


def test_control_endpoints(sandbox: MarketingCloudSandbox) -> None:
    control = f"{sandbox.url}/__sandbox"
    token = get_token(sandbox)
    with requests.Session() as session:
        assert session.get(f"{control}/health", timeout=5).json() == {"ok": True}
        queued = session.post(f"{control}/faults", json={"kind": "429", "count": 2, "retry_after": 1}, timeout=5)
        assert queued.status_code == 200
        assert queued.json() == {"queued": True}
        assert session.post(f"{control}/faults", json={"kind": "bogus"}, timeout=5).status_code == 400
        assert put_row(sandbox, token, "SK-1", {}).status_code == 429
        assert session.delete(f"{control}/faults", timeout=5).status_code == 200
        assert put_row(sandbox, token, "SK-1", {"FirstName": "b"}).status_code == 200

        rows = session.get(f"{control}/rows/{DE}", timeout=5).json()
        assert rows == {"SK-1": {"FirstName": "b", "SubscriberKey": "SK-1"}}
        log = session.get(f"{control}/log", timeout=5).json()
        assert [entry["status"] for entry in log] == [200, 429, 200]

        config = session.post(f"{control}/config", json={"latency_ms": 5, "fail_rate": 0.25}, timeout=5)
        assert config.status_code == 200
        assert config.json()["latency_ms"] == 5
        assert "client_secret" not in config.json()
        assert sandbox.config.fail_rate == 0.25
        assert session.post(f"{control}/config", json={"fail_rate": 2}, timeout=5).status_code == 400
        session.post(f"{control}/config", json={"latency_ms": 0, "fail_rate": 0}, timeout=5)

        assert session.post(f"{control}/expire-tokens", timeout=5).status_code == 200
        assert put_row(sandbox, token, "SK-1", {}).status_code == 401

        assert session.post(f"{control}/reset", timeout=5).status_code == 200
        assert sandbox.rows(DE) == {}
        assert sandbox.requests_log() == []
        assert session.get(f"{control}/nothing", timeout=5).status_code == 404


def test_reset_method(sandbox: MarketingCloudSandbox) -> None:
    token = get_token(sandbox)
    put_row(sandbox, token, "SK-1", {})
    sandbox.inject("500")
    sandbox.configure(fail_rate=1.0, latency_ms=5)
    sandbox.reset()
    assert (sandbox.config.fail_rate, sandbox.config.latency_ms) == (0.0, 0)
    assert sandbox.rows(DE) == {}
    assert sandbox.requests_log() == []
    assert sandbox.faults() == []
    assert put_row(sandbox, token, "SK-1", {}).status_code == 401


def test_a_call_answered_after_a_reset_is_not_in_the_new_log(sandbox: MarketingCloudSandbox) -> None:
    # One test's client gives up on a slow answer; the next test resets the shared sandbox while
    # the answer is still on its way. Seen: the late answer counted among the next test's calls.
    token = get_token(sandbox)
    sandbox.inject("timeout", delay=1.0)
    with pytest.raises(requests.Timeout):
        put_row(sandbox, token, "SK-1", {}, timeout=0.2)
    sandbox.reset()
    time.sleep(1.3)  # the sandbox answers the abandoned call meanwhile
    assert sandbox.requests_log() == []
    token = get_token(sandbox)
    assert put_row(sandbox, token, "SK-1", {}).status_code == 200
    assert [(e["method"], e["status"]) for e in sandbox.requests_log()] == [("POST", 200), ("PUT", 200)]


def test_url_has_no_trailing_slash(sandbox: MarketingCloudSandbox) -> None:
    assert sandbox.url.startswith("http://127.0.0.1:")
    assert not sandbox.url.endswith("/")


# -- Journey Builder --------------------------------------------------------------------------


def test_sign_execute_roundtrip() -> None:
    subscriber = DEMO_SUBSCRIBERS[0]
    payload = build_execute_payload(subscriber, journey_id="journey-1", now=int(time.time()))
    token = sign_execute(payload, JWT_SECRET)
    assert isinstance(token, bytes)
    decoded = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert decoded["inArguments"] == [{name: value} for name, value in subscriber.items()]
    assert decoded["keyValue"] == subscriber["SubscriberKey"]
    assert decoded["journeyId"] == "journey-1"
    assert decoded["exp"] - decoded["iat"] == 300
    assert decoded["mode"] == 0
    assert decoded["outArguments"] == []
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, JWT_SECRET + "-other", algorithms=["HS256"])


def test_demo_subscribers_are_fake_and_complete() -> None:
    assert len(DEMO_SUBSCRIBERS) == 8
    required = {
        "SubscriberKey",
        "EmailAddress",
        "SubscriberId",
        "FirstName",
        "LastName",
        "Status",
        "CreatedDate",
        "ModifiedDate",
    }
    full = required | {
        "MobileNumber",
        "BirthDate",
        "Gender",
        "AddressLine1",
        "City",
        "PostalCode",
        "StateProvince",
        "Country",
    }
    for subscriber in DEMO_SUBSCRIBERS[:6]:
        assert set(subscriber) == full
    for subscriber in DEMO_SUBSCRIBERS:
        assert required <= set(subscriber) <= full
        assert subscriber["EmailAddress"].strip().lower().endswith(("@example.com", "@example.org", "@example.net"))
    emails = [s["EmailAddress"] for s in DEMO_SUBSCRIBERS]
    assert len({e.strip().lower() for e in emails}) == 6  # one case/whitespace variant, one shared mailbox


def test_send_demo_posts_signed_jwts() -> None:
    # A tiny receiver stands in for the hub's execute endpoint, checking what Journey Builder sends.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert self.headers["Content-Type"] == "application/jwt"
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(jwt.decode(body, JWT_SECRET, algorithms=["HS256"]))
            answer = b'{"eventId": "evt-%d"}' % len(received)
            self.send_response(202)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/execute"
        responses = send_demo(url, JWT_SECRET, DEMO_SUBSCRIBERS[:2])
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert [r.status_code for r in responses] == [202, 202]
    assert [r.json()["eventId"] for r in responses] == ["evt-1", "evt-2"]
    assert [p["keyValue"] for p in received] == ["SK-DEMO-0001", "SK-DEMO-0002"]
    # Each contact's in-arguments are the entry source's row, resolved through the activity's bindings.
    assert received[0]["inArguments"] == [{name: value} for name, value in DEMO_SUBSCRIBERS[0].items()]


KEY = "DEAudience-5b9e3a1c-2d4f-4e6a-8b0c-1d2e3f4a5b6c"


def test_binding_paths_take_quoted_and_bare_segments() -> None:
    assert binding_path('Contact.Attribute."Customer Individuals".FirstName') == [
        "Contact",
        "Attribute",
        "Customer Individuals",
        "FirstName",
    ]
    assert binding_path(f'Event.{KEY}."Email"') == ["Event", KEY, "Email"]
    assert binding_path(f'Event."{KEY}".EmailAddress') == ["Event", KEY, "EmailAddress"]
    for broken in ("Event..X", 'Event."open', "Contact Key", ""):
        with pytest.raises(BindingError):
            binding_path(broken)


def test_the_journey_player_resolves_bindings_as_journey_builder_does() -> None:
    journey = Journey(
        KEY,
        [
            {"SubscriberKey": "{{Contact.Key}}"},
            {"EmailAddress": "{{InteractionDefaults.Email}}"},
            {"FirstName": f'{{{{Event."{KEY}".FirstName}}}}'},
            {"Mobile": "{{InteractionDefaults.MobileNumber}}"},
            {"Greeting": "Hello {{Contact.Key}}, entered with {{Event." + KEY + '."FirstName"}}'},
            {"LastName": f'{{{{Event."{KEY}".lastname}}}}'},  # bindings are case-sensitive
            {"Tier": '{{Contact.Attribute."Loyalty".Tier}}'},
            {"Fixed": "web"},
        ],
        attribute_sets={"Loyalty": {"SK-1": {"Tier": "Gold"}}},
    )
    journey.publish()
    row = {"SubscriberKey": "SK-1", "EmailAddress": "ada@example.com", "FirstName": "Ada", "LastName": "Lovelace"}
    assert journey.resolve_in_arguments("SK-1", row) == [
        {"SubscriberKey": "SK-1"},
        {"EmailAddress": "ada@example.com"},  # the journey's default email: the entry source's EmailAddress
        {"FirstName": "Ada"},
        {"Mobile": "{{InteractionDefaults.MobileNumber}}"},  # no default mobile number: unresolved
        {"Greeting": "Hello SK-1, entered with Ada"},
        {"LastName": f'{{{{Event."{KEY}".lastname}}}}'},
        {"Tier": "Gold"},
        {"Fixed": "web"},
    ]
    payload = journey.execute_payload("SK-1", row)
    assert payload["keyValue"] == "SK-1" and payload["journeyId"] == journey.journey_id


def test_the_journey_player_refuses_to_publish_what_journey_builder_cannot_compile() -> None:
    journey = Journey(
        KEY,
        [
            {"SubscriberKey": "{{Contact.Key}}"},
            {"FirstName": '{{Contact.Attribute."Individual".FirstName}}'},
            {"LastName": '{{Event."DEAudience-another-journey".LastName}}'},
            {"Journey": "{{Context.DefinitionId}}"},
        ],
    )
    with pytest.raises(BindingError) as refused:
        journey.publish()
    assert [problem.split(":")[0] for problem in refused.value.problems] == [
        "in-argument FirstName",
        "in-argument LastName",
        "in-argument Journey",
    ]
    assert "no attribute set 'Individual'" in refused.value.problems[0]
    with pytest.raises(BindingError, match="not published"):
        journey.resolve_in_arguments("SK-1", {})
    bound = entry_source_bindings(DEMO_EVENT_DEFINITION_KEY, ["SubscriberKey", "EmailAddress", "First Name"])
    assert bound[2] == {"First Name": f'{{{{Event."{DEMO_EVENT_DEFINITION_KEY}"."First Name"}}}}'}
    Journey(DEMO_EVENT_DEFINITION_KEY, bound).publish()
