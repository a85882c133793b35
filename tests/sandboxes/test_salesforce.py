"""Tests of the Salesforce REST API sandbox over real HTTP.

They need no database and no Django settings: the sandbox is plain stdlib, started per test on a
free port. The fixture is called ``sf`` because conftest's ``sandbox`` is the Marketing Cloud one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandboxes.salesforce.server import (
    FAULT_KINDS,
    SalesforceSandbox,
    SalesforceSandboxConfig,
    redact_path,
)

CLIENT_ID = "sf-sandbox-client-id"
CLIENT_SECRET = "sf-sandbox-client-secret"
TOKEN = "/services/oauth2/token"
API = "/services/data/v62.0"
CONTACTS = f"{API}/sobjects/Contact/Global_Customer_Id__c"
ACCOUNTS = f"{API}/sobjects/Account/Global_Customer_Id__c"
ADA = {"FirstName": "Ada", "LastName": "Lovelace", "Email": "ada.lovelace@example.com"}


@pytest.fixture
def sf() -> Iterator[SalesforceSandbox]:
    server = SalesforceSandbox(config=SalesforceSandboxConfig(seed=7)).start()
    try:
        yield server
    finally:
        server.stop()


def get_token(sf: SalesforceSandbox) -> str:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    response = requests.post(f"{sf.url}{TOKEN}", data=form, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture
def token(sf: SalesforceSandbox) -> str:
    return get_token(sf)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upsert(
    sf: SalesforceSandbox, token: str, key: str, fields: Any, path: str = CONTACTS, **kwargs: Any
) -> requests.Response:
    kwargs.setdefault("timeout", 5)
    return requests.patch(f"{sf.url}{path}/{key}", json=fields, headers=auth(token), **kwargs)


def only_error(response: requests.Response) -> dict[str, Any]:
    """The single error object of a Salesforce error array."""
    body = response.json()
    assert isinstance(body, list), body
    assert len(body) == 1, body
    return body[0]


# -- token endpoint ---------------------------------------------------------------------------


def test_token_success_shape(sf: SalesforceSandbox) -> None:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    response = requests.post(f"{sf.url}{TOKEN}", data=form, timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    data = response.json()
    assert set(data) == {"access_token", "signature", "scope", "instance_url", "id", "token_type", "issued_at"}
    # The client credentials flow returns no expires_in: clients learn of expiry from a 401.
    assert "expires_in" not in data
    assert data["token_type"] == "Bearer"
    assert data["instance_url"] == sf.url
    assert data["scope"] == "api"
    assert data["id"].startswith(f"{sf.url}/id/00D")
    assert data["access_token"].startswith("00D")
    assert data["issued_at"].isdigit()
    assert abs(int(data["issued_at"]) / 1000 - time.time()) < 60
    expected = hmac.new(CLIENT_SECRET.encode(), (data["id"] + data["issued_at"]).encode(), hashlib.sha256).digest()
    assert base64.b64decode(data["signature"]) == expected


def test_token_accepts_basic_auth_credentials(sf: SalesforceSandbox) -> None:
    response = requests.post(
        f"{sf.url}{TOKEN}", data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET), timeout=5
    )
    assert response.status_code == 200, response.text
    assert requests.get(f"{sf.url}{API}/limits", headers=auth(response.json()["access_token"]), timeout=5).ok


@pytest.mark.parametrize(
    ("form", "error", "description"),
    [
        ({"client_id": CLIENT_ID, "client_secret": "wrong"}, "invalid_client", "invalid client credentials"),
        ({"client_id": CLIENT_ID}, "invalid_client", "invalid client credentials"),
        ({"client_id": "nope", "client_secret": CLIENT_SECRET}, "invalid_client_id", "client identifier invalid"),
        ({"client_secret": CLIENT_SECRET}, "invalid_client_id", "client identifier invalid"),
        (
            {"grant_type": "password", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            "unsupported_grant_type",
            "grant type not supported",
        ),
        ({"grant_type": "", "client_id": CLIENT_ID}, "unsupported_grant_type", "grant type not supported"),
    ],
)
def test_token_refusals(sf: SalesforceSandbox, form: dict[str, str], error: str, description: str) -> None:
    response = requests.post(f"{sf.url}{TOKEN}", data={"grant_type": "client_credentials", **form}, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": error, "error_description": description}


def test_token_refuses_a_json_body(sf: SalesforceSandbox) -> None:
    # Real Salesforce only reads form-encoded parameters; JSON reads as a request without grant_type.
    body = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    response = requests.post(f"{sf.url}{TOKEN}", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": "unsupported_grant_type", "error_description": "grant type not supported"}


def test_token_wants_post(sf: SalesforceSandbox) -> None:
    response = requests.get(f"{sf.url}{TOKEN}", timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# -- upsert and read by external ID -----------------------------------------------------------


def test_upsert_inserts_then_updates_and_reads_back(sf: SalesforceSandbox, token: str) -> None:
    created = upsert(sf, token, "GC-1", ADA)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["success"] is True
    assert body["errors"] == []
    assert body["created"] is True
    record_id = body["id"]
    assert record_id.startswith("003")
    assert len(record_id) == 18
    assert created.headers["Sforce-Limit-Info"] == "api-usage=1/15000"

    updated = upsert(sf, token, "GC-1", {"Phone": "+44 20 7946 0018", "HasOptedOutOfEmail": True})
    assert updated.status_code == 200, updated.text
    assert updated.json() == {"id": record_id, "success": True, "errors": [], "created": False}

    fetched = requests.get(f"{sf.url}{CONTACTS}/GC-1", headers=auth(token), timeout=5)
    assert fetched.status_code == 200
    record = fetched.json()
    assert record["attributes"] == {"type": "Contact", "url": f"{API}/sobjects/Contact/{record_id}"}
    assert record["Id"] == record_id
    assert record["Global_Customer_Id__c"] == "GC-1"
    assert record["FirstName"] == "Ada"
    assert record["Phone"] == "+44 20 7946 0018"
    assert record["HasOptedOutOfEmail"] is True
    assert record["Name"] == "Ada Lovelace"  # compound, computed by the org
    assert record["MailingCity"] is None  # every field is returned, unset ones as null
    assert record["CreatedDate"].endswith("+0000")

    # The attributes URL leads to the same record by Id.
    by_id = requests.get(f"{sf.url}{record['attributes']['url']}", headers=auth(token), timeout=5)
    assert by_id.status_code == 200
    assert by_id.json()["Email"] == ADA["Email"]

    stored = sf.records("Contact")
    assert list(stored) == ["GC-1"]
    assert stored["GC-1"]["Id"] == record_id
    assert stored["GC-1"]["Phone"] == "+44 20 7946 0018"


def test_account_upsert_and_field_selection(sf: SalesforceSandbox, token: str) -> None:
    response = upsert(sf, token, "GC-9", {"Name": "Analytical Engines Ltd", "Website": "example.com"}, ACCOUNTS)
    assert response.status_code == 201, response.text
    assert response.json()["id"].startswith("001")

    fetched = requests.get(f"{sf.url}{ACCOUNTS}/GC-9?fields=Name,website", headers=auth(token), timeout=5)
    assert fetched.status_code == 200
    assert set(fetched.json()) == {"attributes", "Name", "Website"}

    bad = requests.get(f"{sf.url}{ACCOUNTS}/GC-9?fields=Name,Nope__c", headers=auth(token), timeout=5)
    assert bad.status_code == 400
    assert only_error(bad)["errorCode"] == "INVALID_FIELD"


def test_upsert_before_v46_answers_update_with_bare_204(sf: SalesforceSandbox, token: str) -> None:
    old = "/services/data/v45.0/sobjects/Contact/Global_Customer_Id__c"
    created = upsert(sf, token, "GC-2", ADA, old)
    assert created.status_code == 201
    assert "created" not in created.json()
    updated = upsert(sf, token, "GC-2", {"Title": "Countess"}, old)
    assert updated.status_code == 204
    assert updated.content == b""


def test_update_only_does_not_create(sf: SalesforceSandbox, token: str) -> None:
    response = upsert(sf, token, "GC-3", ADA, params={"updateOnly": "true"})
    assert response.status_code == 404
    assert only_error(response)["errorCode"] == "NOT_FOUND"
    assert sf.records("Contact") == {}


def test_field_names_are_case_insensitive(sf: SalesforceSandbox, token: str) -> None:
    response = upsert(sf, token, "GC-4", {"lastname": "Hopper", "EMAIL": "grace@example.com"})
    assert response.status_code == 201, response.text
    assert sf.records("contact")["GC-4"]["LastName"] == "Hopper"


def test_unknown_field_is_refused_by_name(sf: SalesforceSandbox, token: str) -> None:
    response = upsert(sf, token, "GC-5", {**ADA, "Loyalty_Tier__c": "Gold"})
    assert response.status_code == 400
    assert only_error(response) == {
        "message": "No such column 'Loyalty_Tier__c' on sobject of type Contact",
        "errorCode": "INVALID_FIELD",
        "fields": ["Loyalty_Tier__c"],
    }
    assert sf.records("Contact") == {}


@pytest.mark.parametrize(
    ("fields", "error_code", "error_fields"),
    [
        ({**ADA, "Name": "Ada L."}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["Name"]),
        ({**ADA, "Id": "003000000000000AAA"}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["Id"]),
        ({**ADA, "Global_Customer_Id__c": "GC-6"}, "INVALID_FIELD", ["Global_Customer_Id__c"]),
        ({"FirstName": "Ada"}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        ({**ADA, "Email": "not-an-address"}, "INVALID_EMAIL_ADDRESS", ["Email"]),
    ],
)
def test_field_level_refusals(
    sf: SalesforceSandbox, token: str, fields: dict[str, Any], error_code: str, error_fields: list[str]
) -> None:
    response = upsert(sf, token, "GC-6", fields)
    assert response.status_code == 400
    error = only_error(response)
    assert error["errorCode"] == error_code
    assert error["fields"] == error_fields
    assert sf.records("Contact") == {}


def test_required_field_cannot_be_blanked_on_update(sf: SalesforceSandbox, token: str) -> None:
    assert upsert(sf, token, "GC-7", ADA).status_code == 201
    response = upsert(sf, token, "GC-7", {"LastName": None})
    assert response.status_code == 400
    assert only_error(response) == {
        "message": "Required fields are missing: [LastName]",
        "errorCode": "REQUIRED_FIELD_MISSING",
        "fields": ["LastName"],
    }
    assert sf.records("Contact")["GC-7"]["LastName"] == "Lovelace"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b'[{"LastName": "Lovelace"}]', "application/json"),
        (b'{"LastName": "Lovelace", "HasOptedOutOfEmail": "yes"}', "application/json"),
        (b'{"LastName": {"nested": 1}}', "application/json"),
    ],
)
def test_body_parse_errors(sf: SalesforceSandbox, token: str, data: bytes, content_type: str) -> None:
    headers = {**auth(token), "Content-Type": content_type}
    response = requests.patch(f"{sf.url}{CONTACTS}/GC-8", data=data, headers=headers, timeout=5)
    assert response.status_code == 400
    error = only_error(response)
    assert error["errorCode"] == "JSON_PARSER_ERROR"
    assert "fields" not in error


def test_non_json_media_type_is_refused(sf: SalesforceSandbox, token: str) -> None:
    headers = {**auth(token), "Content-Type": "text/plain"}
    response = requests.patch(f"{sf.url}{CONTACTS}/GC-8", data=b"LastName=x", headers=headers, timeout=5)
    assert response.status_code == 415
    assert only_error(response)["errorCode"] == "UNSUPPORTED_MEDIA_TYPE"


def test_duplicate_external_ids_answer_300() -> None:
    config = SalesforceSandboxConfig(
        known_fields={"Contact": {"LastName", "Legacy_Id__c"}},
        external_id_fields={"Contact": {"Global_Customer_Id__c", "Legacy_Id__c"}},
    )
    with SalesforceSandbox(config=config) as sf:
        token = get_token(sf)
        first = upsert(sf, token, "GC-1", {"LastName": "One", "Legacy_Id__c": "L-1"}).json()["id"]
        second = upsert(sf, token, "GC-2", {"LastName": "Two", "Legacy_Id__c": "L-1"}).json()["id"]
        legacy = f"{API}/sobjects/Contact/Legacy_Id__c/L-1"

        response = requests.get(f"{sf.url}{legacy}", headers=auth(token), timeout=5)
        assert response.status_code == 300
        assert sorted(response.json()) == sorted(f"{API}/sobjects/Contact/{rid}" for rid in (first, second))
        assert upsert(sf, token, "L-1", {"LastName": "Three"}, legacy.rsplit("/", 1)[0]).status_code == 300
        assert set(sf.records("Contact")) == {"GC-1", "GC-2"}


def test_custom_schema_limits_fields_and_sobjects() -> None:
    config = SalesforceSandboxConfig(
        known_fields={"Household__c": {"Size__c"}}, external_id_fields={"Household__c": {"Hub_Id__c"}}
    )
    with SalesforceSandbox(config=config) as sf:
        token = get_token(sf)
        response = upsert(sf, token, "H-1", {"Size__c": 4}, f"{API}/sobjects/Household__c/Hub_Id__c")
        assert response.status_code == 201, response.text
        assert response.json()["id"].startswith("a")
        assert sf.records("Household__c")["H-1"]["Size__c"] == 4
        assert upsert(sf, token, "GC-1", ADA).status_code == 404  # no Contact in this org


# -- not found and method errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (f"{API}/sobjects/Contactz/Global_Customer_Id__c/GC-1", "The requested resource does not exist"),
        (f"{CONTACTS}/GC-unknown", "The requested resource does not exist"),
        (
            f"{API}/sobjects/Contact/Email/ada@example.com",
            "Provided external ID field does not exist or is not accessible: Email",
        ),
        (
            f"{API}/sobjects/Contact/not-an-id",
            "Provided external ID field does not exist or is not accessible: not-an-id",
        ),
        (f"{API}/sobjects/Contact/003000000000000AAA", "The requested resource does not exist"),
        ("/services/data/v99.0/limits", "The requested resource does not exist"),
        ("/services/data/v20.0/limits", "The requested resource does not exist"),
        (f"{API}/query", "The requested resource does not exist"),
    ],
)
def test_not_found(sf: SalesforceSandbox, token: str, path: str, message: str) -> None:
    response = requests.get(f"{sf.url}{path}", headers=auth(token), timeout=5)
    assert response.status_code == 404
    assert only_error(response) == {"message": message, "errorCode": "NOT_FOUND"}


def test_unknown_sobject_upsert_is_404(sf: SalesforceSandbox, token: str) -> None:
    response = upsert(sf, token, "GC-1", ADA, f"{API}/sobjects/Customer__c/Global_Customer_Id__c")
    assert response.status_code == 404
    assert only_error(response)["errorCode"] == "NOT_FOUND"


def test_wrong_method_is_405(sf: SalesforceSandbox, token: str) -> None:
    response = requests.put(f"{sf.url}{CONTACTS}/GC-1", json=ADA, headers=auth(token), timeout=5)
    assert response.status_code == 405
    assert only_error(response)["errorCode"] == "METHOD_NOT_ALLOWED"
    assert response.headers["Allow"] == "GET, PATCH"


# -- authentication ---------------------------------------------------------------------------


def test_missing_and_unknown_tokens_are_401(sf: SalesforceSandbox) -> None:
    session = {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    for headers in ({}, auth("00Dnot-a-token"), {"Authorization": "Bearer"}):
        response = requests.get(f"{sf.url}{CONTACTS}/GC-1", headers=headers, timeout=5)
        assert response.status_code == 401
        assert only_error(response) == session
    basic = requests.get(f"{sf.url}{API}/limits", headers={"Authorization": "Basic eDp5"}, timeout=5)
    assert basic.status_code == 401
    assert only_error(basic)["errorCode"] == "INVALID_AUTH_HEADER"


def test_expired_tokens_are_401_until_a_new_one_is_fetched(sf: SalesforceSandbox, token: str) -> None:
    assert upsert(sf, token, "GC-1", ADA).status_code == 201
    sf.expire_tokens()
    response = upsert(sf, token, "GC-1", ADA)
    assert response.status_code == 401
    assert only_error(response)["errorCode"] == "INVALID_SESSION_ID"
    assert upsert(sf, get_token(sf), "GC-1", ADA).status_code == 200


def test_token_lifetime(sf: SalesforceSandbox) -> None:
    sf.configure(token_ttl=0)
    token = get_token(sf)
    assert requests.get(f"{sf.url}{API}/limits", headers=auth(token), timeout=5).status_code == 401
    sf.configure(token_ttl=7200)
    assert requests.get(f"{sf.url}{API}/limits", headers={"Authorization": f"OAuth {get_token(sf)}"}, timeout=5).ok


# -- versions and limits ----------------------------------------------------------------------


def test_versions_need_no_session(sf: SalesforceSandbox) -> None:
    response = requests.get(f"{sf.url}/services/data/", timeout=5)
    assert response.status_code == 200
    versions = response.json()
    assert versions[0] == {"label": "Summer '14", "url": "/services/data/v31.0", "version": "31.0"}
    assert versions[-1] == {"label": "Winter '25", "url": "/services/data/v62.0", "version": "62.0"}
    assert {"label": "Spring '24", "url": "/services/data/v60.0", "version": "60.0"} in versions
    assert "Sforce-Limit-Info" not in response.headers


def test_latest_alias_and_version_root(sf: SalesforceSandbox, token: str) -> None:
    assert upsert(sf, token, "GC-1", ADA, "/services/data/latest/sobjects/Contact/Global_Customer_Id__c").ok
    root = requests.get(f"{sf.url}{API}", headers=auth(token), timeout=5)
    assert root.json() == {"limits": f"{API}/limits", "sobjects": f"{API}/sobjects"}


def test_daily_limit_is_counted_and_enforced(sf: SalesforceSandbox, token: str) -> None:
    sf.configure(daily_api_limit=3)
    assert upsert(sf, token, "GC-1", ADA).headers["Sforce-Limit-Info"] == "api-usage=1/3"
    limits = requests.get(f"{sf.url}{API}/limits", headers=auth(token), timeout=5)
    assert limits.json() == {"DailyApiRequests": {"Max": 3, "Remaining": 1}}
    assert upsert(sf, token, "GC-1", ADA).status_code == 200
    refused = upsert(sf, token, "GC-1", ADA)
    assert refused.status_code == 403
    assert only_error(refused) == {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=3/3"
    # Token requests and the versions resource do not count.
    assert get_token(sf)
    assert requests.get(f"{sf.url}/services/data/", timeout=5).ok


# -- fault injection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "error_code"),
    [
        ("401", 401, "INVALID_SESSION_ID"),
        ("400", 400, "INVALID_FIELD"),
        ("403-limit", 403, "REQUEST_LIMIT_EXCEEDED"),
        ("404", 404, "NOT_FOUND"),
        ("500", 500, "UNKNOWN_EXCEPTION"),
        ("503", 503, "SERVER_UNAVAILABLE"),
    ],
)
def test_fault_kinds(sf: SalesforceSandbox, token: str, kind: str, status: int, error_code: str) -> None:
    sf.inject(kind)
    response = upsert(sf, token, "GC-1", ADA)
    assert response.status_code == status
    assert only_error(response)["errorCode"] == error_code
    assert sf.records("Contact") == {}
    # One-shot: the next call goes through (a 401 fault revoked every session, hence a new token).
    fresh = get_token(sf) if kind == "401" else token
    assert upsert(sf, fresh, "GC-1", ADA).status_code == 201


def test_fault_401_revokes_sessions(sf: SalesforceSandbox, token: str) -> None:
    sf.inject("401")
    assert upsert(sf, token, "GC-1", ADA).status_code == 401
    assert upsert(sf, token, "GC-1", ADA).status_code == 401  # the old token stays dead


def test_fault_400_names_the_sobject(sf: SalesforceSandbox, token: str) -> None:
    sf.inject("400")
    error = only_error(upsert(sf, token, "GC-1", {"Name": "Acme"}, ACCOUNTS))
    assert error["message"].endswith("on sobject of type Account")


def test_fault_503_retry_after(sf: SalesforceSandbox, token: str) -> None:
    sf.inject("503", retry_after=7)
    sf.inject("503")
    first = upsert(sf, token, "GC-1", ADA)
    assert first.headers["Retry-After"] == "7"
    second = upsert(sf, token, "GC-1", ADA)
    assert second.status_code == 503
    assert "Retry-After" not in second.headers


def test_fault_timeout(sf: SalesforceSandbox, token: str) -> None:
    sf.inject("timeout", delay=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        upsert(sf, token, "GC-1", ADA, timeout=0.2)
    assert sf.faults() == []
    # A client that waits long enough gets a normal answer.
    sf.inject("timeout", delay=0.1)
    assert upsert(sf, token, "GC-2", ADA).status_code == 201


def test_fault_reset(sf: SalesforceSandbox, token: str) -> None:
    sf.inject("reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        upsert(sf, token, "GC-1", ADA)
    assert sf.requests_log()[-1]["status"] == 0
    assert upsert(sf, token, "GC-1", ADA).status_code == 201


def test_fault_count_and_fifo(sf: SalesforceSandbox, token: str) -> None:
    sf.inject("503", count=2)
    sf.inject("500")
    statuses = [upsert(sf, token, "GC-1", ADA).status_code for _ in range(4)]
    assert statuses == [503, 503, 500, 201]


def test_fault_path_contains(sf: SalesforceSandbox, token: str) -> None:
    sf.inject("500", path_contains="/sobjects/Account/")
    assert upsert(sf, token, "GC-1", ADA).status_code == 201  # a Contact call is not matched
    assert upsert(sf, token, "GC-1", {"Name": "Acme"}, ACCOUNTS).status_code == 500
    assert upsert(sf, token, "GC-1", {"Name": "Acme"}, ACCOUNTS).status_code == 201


def test_faults_spare_the_token_endpoint_unless_targeted(sf: SalesforceSandbox) -> None:
    sf.inject("503")
    assert get_token(sf)  # not consumed by the token call
    assert len(sf.faults()) == 1
    sf.clear_faults()
    sf.inject("503", path_contains=TOKEN)
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    assert requests.post(f"{sf.url}{TOKEN}", data=form, timeout=5).status_code == 503


def test_fail_rate_and_latency(sf: SalesforceSandbox, token: str) -> None:
    sf.configure(fail_rate=1.0)
    response = upsert(sf, token, "GC-1", ADA)
    assert response.status_code == 500
    assert only_error(response)["errorCode"] == "UNKNOWN_EXCEPTION"
    assert get_token(sf)  # the token endpoint is spared
    sf.configure(fail_rate=0.0, latency_ms=150)
    started = time.monotonic()
    assert upsert(sf, token, "GC-1", ADA).status_code == 201
    assert time.monotonic() - started >= 0.15


def test_inject_validates(sf: SalesforceSandbox) -> None:
    assert "403-limit" in FAULT_KINDS
    with pytest.raises(ValueError, match="unknown fault kind"):
        sf.inject("418")
    with pytest.raises(ValueError, match="count"):
        sf.inject("500", count=0)
    with pytest.raises(ValueError, match="delay"):
        sf.inject("timeout", delay=-1)


# -- logging ------------------------------------------------------------------------------------


def test_log_masks_external_id_values_and_counts(sf: SalesforceSandbox, token: str) -> None:
    email_key = "ada.lovelace@example.com"
    upsert(sf, token, email_key, ADA)
    requests.get(f"{sf.url}{CONTACTS}/{email_key}", headers=auth(token), timeout=5)
    requests.get(f"{sf.url}{API}/sobjects/Contact/{email_key}", headers=auth(token), timeout=5)

    log = sf.requests_log()
    assert [entry["method"] for entry in log] == ["POST", "PATCH", "GET", "GET"]
    assert log[1] == {"method": "PATCH", "path": f"{CONTACTS}/*", "status": 201, "time": log[1]["time"]}
    assert log[3]["path"] == f"{API}/sobjects/Contact/*"
    assert "lovelace" not in repr(log).lower()
    assert sf.count("patch", f"{API}/sobjects/Contact") == 1
    assert sf.count("GET", CONTACTS) == 1
    assert sf.count("POST", TOKEN) == 1


def test_redact_path_keeps_record_ids() -> None:
    assert redact_path(f"{API}/sobjects/Contact/003000000000000AAA?fields=Id") == (
        f"{API}/sobjects/Contact/003000000000000AAA"
    )
    assert redact_path(f"{CONTACTS}/ada%40example.com") == f"{CONTACTS}/*"


# -- control endpoints --------------------------------------------------------------------------


def test_control_endpoints(sf: SalesforceSandbox, token: str) -> None:
    control = f"{sf.url}/__sandbox"
    assert requests.get(f"{control}/health", timeout=5).json() == {"ok": True}

    queued = requests.post(f"{control}/faults", json={"kind": "503", "count": 2, "retry_after": 3}, timeout=5)
    assert queued.json() == {"queued": True}
    assert requests.get(f"{control}/faults", timeout=5).json()[0]["count"] == 2
    assert requests.delete(f"{control}/faults", timeout=5).json() == {"cleared": True}
    assert sf.faults() == []
    bad_kind = requests.post(f"{control}/faults", json={"kind": "teapot"}, timeout=5)
    assert bad_kind.status_code == 400
    assert "unknown fault kind" in only_error(bad_kind)["message"]

    upsert(sf, token, "GC-1", ADA)
    records = requests.get(f"{control}/records/Contact", timeout=5).json()
    assert records["GC-1"]["LastName"] == "Lovelace"
    assert requests.get(f"{control}/records/Nothing__c", timeout=5).json() == {}
    log = requests.get(f"{control}/log", timeout=5).json()
    assert [entry["status"] for entry in log] == [200, 201]  # control calls are not logged

    assert requests.post(f"{control}/expire-tokens", timeout=5).json() == {"expired": True}
    assert upsert(sf, token, "GC-1", ADA).status_code == 401

    config = requests.post(f"{control}/config", json={"latency_ms": 5, "daily_api_limit": 99}, timeout=5).json()
    assert config["latency_ms"] == 5
    assert config["daily_api_limit"] == 99
    assert "client_secret" not in config
    assert config["known_fields"] is None
    assert requests.get(f"{control}/config", timeout=5).json() == config
    bad_config = requests.post(f"{control}/config", json={"fail_rate": 2}, timeout=5)
    assert bad_config.status_code == 400
    assert requests.post(f"{control}/config", json={"colour": "red"}, timeout=5).status_code == 400
    schema = requests.post(f"{control}/config", json={"known_fields": {"Lead": ["LastName", "Company"]}}, timeout=5)
    assert schema.json()["known_fields"] == {"Lead": ["Company", "LastName"]}

    assert requests.post(f"{control}/reset", timeout=5).json() == {"reset": True}
    assert sf.records("Contact") == {}
    assert sf.requests_log() == []
    assert requests.get(f"{control}/nope", timeout=5).status_code == 404


def test_records_returns_copies(sf: SalesforceSandbox, token: str) -> None:
    upsert(sf, token, "GC-1", ADA)
    sf.records("Contact")["GC-1"]["LastName"] = "Changed"
    assert sf.records("Contact")["GC-1"]["LastName"] == "Lovelace"
    with pytest.raises(ValueError, match="no field"):
        sf.records("Contact", key_field="Nope__c")


def test_config_is_validated_at_construction() -> None:
    with pytest.raises(ValueError, match="api_version"):
        SalesforceSandbox(config=SalesforceSandboxConfig(api_version="62"))
    with pytest.raises(ValueError, match="known_fields"):
        SalesforceSandbox(config=SalesforceSandboxConfig(known_fields={"Contact": "LastName"}))
