"""The sandbox's asynchronous data-extension rows API over real HTTP (sources: sandboxes.marketing_cloud.async_rows).

No database, no Django: the sandbox is started per test on a free port.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from integrations.marketing_cloud import subscriber_soap
from integrations.marketing_cloud.schema import INDIVIDUAL, DataExtensionField, DataExtensionSchema
from sandboxes.marketing_cloud.server import MarketingCloudSandbox, SandboxConfig
from tests.sandboxes.test_marketing_cloud import auth, get_token

ASYNC = "/data/v1/async/dataextensions/key:Individual/rows"


@pytest.fixture
def sandbox() -> Iterator[MarketingCloudSandbox]:
    server = MarketingCloudSandbox(config=SandboxConfig(account_id="500001", seed=7)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token(sandbox: MarketingCloudSandbox) -> str:
    return get_token(sandbox)


def submit(sandbox, token, items, *, method="PUT", path=ASYNC) -> requests.Response:
    return requests.request(method, f"{sandbox.url}{path}", json={"items": items}, headers=auth(token), timeout=10)


def status(sandbox, token, request_id) -> dict:
    return requests.get(f"{sandbox.url}/data/v1/async/{request_id}/status", headers=auth(token), timeout=5).json()


def results(sandbox, token, request_id, query="") -> dict:
    url = f"{sandbox.url}/data/v1/async/{request_id}/results{query}"
    return requests.get(url, headers=auth(token), timeout=5).json()


def test_an_upsert_is_accepted_with_202_and_a_request_id_then_completes(sandbox, token):
    sandbox.configure(async_delay=0.3)
    answer = submit(sandbox, token, [{"SubscriberKey": "SK-1", "GlobalPartyId": "m-1"}])
    assert answer.status_code == 202
    request_id = answer.json()["requestId"]
    assert answer.json()["resultMessages"] == []
    pending = status(sandbox, token, request_id)["status"]
    assert pending["requestStatus"] == "Pending" and pending["requestId"] == request_id
    assert sandbox.rows("Individual") == {}  # not yet processed
    time.sleep(0.4)
    done = status(sandbox, token, request_id)
    assert done["status"]["requestStatus"] == "Complete" and done["status"]["resultStatus"] == "OK"
    assert done["status"]["hasErrors"] is False and done["status"]["completionDateTime"]
    assert done["requestId"] != request_id  # the status call's own ID, as the reference page shows
    assert sandbox.rows("Individual") == {"SK-1": {"SubscriberKey": "SK-1", "GlobalPartyId": "m-1"}}
    page = results(sandbox, token, request_id)
    assert page["count"] == 1 and page["items"] == [{"status": "OK", "message": "Upserted DataExtensionObject"}]


def test_rows_are_checked_one_by_one_with_the_synchronous_endpoints_rules(sandbox, token):
    items = [
        {"SubscriberKey": "SK-1", "GlobalPartyId": "m-1"},
        {"GlobalPartyId": "no key"},
        {"SubscriberKey": "SK-3", "MasterId": "m-3"},
        {"SubscriberKey": "SK-4", "GlobalPartyId": "x" * 65},
        {"SubscriberKey": "SK-5", "BirthDate": "not a date"},
        {"SubscriberKey": "SK-6", "GlobalPartyId": "m-6"},
    ]
    request_id = submit(sandbox, token, items).json()["requestId"]
    state = status(sandbox, token, request_id)["status"]
    assert state["resultStatus"] == "Has Errors" and state["hasErrors"] is True
    rows = results(sandbox, token, request_id)["items"]
    assert [r["status"] for r in rows] == ["OK", "Error", "Error", "Error", "Error", "OK"]  # in submission order
    assert rows[1]["message"] == "Cannot locate the existing record. Required keys are missing."
    assert rows[1]["errors"] == [
        {
            "name": "subscriberkey",
            "errorMessage": "Column [subscriberkey] does not allow null value.",
            "errorCode": 70001,
        }
    ]
    assert "The column [MasterId] does not exist" in rows[2]["errors"][0]["errorMessage"]
    assert "exceeds the maximum length of 64" in rows[3]["errors"][0]["errorMessage"]
    assert "is not a valid date" in rows[4]["errors"][0]["errorMessage"]
    assert set(sandbox.rows("Individual")) == {"SK-1", "SK-6"}  # the good rows are written, unlike a rowset


def test_an_insert_refuses_a_row_that_exists(sandbox, token):
    submit(sandbox, token, [{"SubscriberKey": "SK-1", "GlobalPartyId": "m-1"}])
    request_id = submit(sandbox, token, [{"SubscriberKey": "SK-1", "GlobalPartyId": "m-2"}], method="POST").json()[
        "requestId"
    ]
    [row] = results(sandbox, token, request_id)["items"]
    assert row["status"] == "Error" and row["errorCode"] == "UnexpectedError"
    assert "Violation of PRIMARY KEY constraint" in row["message"] and "(SK-1)" in row["message"]
    assert sandbox.rows("Individual")["SK-1"]["GlobalPartyId"] == "m-1"


def test_what_is_refused_before_queueing(sandbox, token):
    unknown = submit(sandbox, token, [{"SubscriberKey": "SK-1"}], path="/data/v1/async/dataextensions/key:Nope/rows")
    assert unknown.status_code == 400
    [message] = unknown.json()["resultMessages"]
    assert message["resultCode"] == "CustomObjectNotFound" and "Key: Nope" in message["message"]
    empty = submit(sandbox, token, [])
    assert (empty.status_code, empty.json()["errorcode"]) == (400, 10002)
    not_objects = submit(sandbox, token, ["SK-1"])
    assert (not_objects.status_code, not_objects.json()["errorcode"]) == (400, 10004)
    garbage = requests.put(f"{sandbox.url}{ASYNC}", data=b"{", headers=auth(token), timeout=5)
    assert (garbage.status_code, garbage.json()["errorcode"]) == (400, 10004)
    huge = submit(sandbox, token, [{"SubscriberKey": f"SK-{i}", "GlobalPartyId": "x" * 60} for i in range(70_000)])
    assert huge.status_code == 413
    reader = get_token(sandbox, scope="data_extensions_read")
    assert submit(sandbox, reader, [{"SubscriberKey": "SK-1"}]).status_code == 403
    assert sandbox.rows("Individual") == {}


def test_by_data_extension_id_too(sandbox, token):
    object_id = sandbox._des["individual"].object_id
    answer = submit(sandbox, token, [{"SubscriberKey": "SK-1"}], path=f"/data/v1/async/dataextensions/{object_id}/rows")
    assert answer.status_code == 202 and "SK-1" in sandbox.rows("Individual")


def test_an_unknown_or_not_yet_indexed_request_is_not_found(sandbox, token):
    gone = status(sandbox, token, "efd98722-5826-418f-849e-c13a06ad3622")
    assert "status" not in gone
    assert gone["resultMessages"][0]["resultCode"] == "AsyncRequestStatusNotFound"
    sandbox.configure(async_not_found_polls=1)
    request_id = submit(sandbox, token, [{"SubscriberKey": "SK-1"}]).json()["requestId"]
    assert "status" not in status(sandbox, token, request_id)
    assert status(sandbox, token, request_id)["status"]["requestStatus"] == "Complete"


def test_results_are_paged(sandbox, token):
    request_id = submit(sandbox, token, [{"SubscriberKey": f"SK-{i}"} for i in range(120)]).json()["requestId"]
    first = results(sandbox, token, request_id)
    assert (first["page"], first["pageSize"], first["count"], len(first["items"])) == (1, 50, 120, 50)
    third = results(sandbox, token, request_id, "?$page=3")
    assert len(third["items"]) == 20
    big = results(sandbox, token, request_id, "?$pageSize=1000")
    assert len(big["items"]) == 120
    sandbox.configure(async_max_results_page=40)
    capped = results(sandbox, token, request_id, "?$pageSize=1000")
    assert capped["pageSize"] == 40 and len(capped["items"]) == 40


def test_deadlocks_can_be_injected_and_are_marked_for_a_rerun(sandbox, token):
    sandbox.configure(async_deadlock_rows=1)
    request_id = submit(sandbox, token, [{"SubscriberKey": "SK-1"}, {"SubscriberKey": "SK-2"}]).json()["requestId"]
    first, second = results(sandbox, token, request_id)["items"]
    assert first["status"] == "Error" and first["message"].endswith("Rerun the transaction.")
    assert second["status"] == "OK"
    assert set(sandbox.rows("Individual")) == {"SK-2"}


def test_a_strict_schema_applies_to_the_async_rows_too(sandbox, token):
    sandbox.declare(
        DataExtensionSchema(
            "Individual",
            "Individual",
            (*INDIVIDUAL.fields, DataExtensionField("Region", "Text", 10, is_required=True)),
        )
    )
    request_id = submit(sandbox, token, [{"SubscriberKey": "SK-1", "GlobalPartyId": "m"}]).json()["requestId"]
    [row] = results(sandbox, token, request_id)["items"]
    assert row["status"] == "Error" and "[Region] is required" in row["errors"][0]["errorMessage"]


def test_reset_forgets_requests(sandbox, token):
    request_id = submit(sandbox, token, [{"SubscriberKey": "SK-1"}]).json()["requestId"]
    assert sandbox.async_requests()[0]["requestId"] == request_id
    sandbox.reset()
    assert sandbox.async_requests() == []


# -- the sandbox's answers against the recorded shapes (tests/fixtures/marketing_cloud/async_*.json) ------

FIXTURES = Path(__file__).parent.parent / "fixtures" / "marketing_cloud"


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_status_and_results_have_the_recorded_shapes(sandbox, token):
    request_id = submit(sandbox, token, [{"GlobalPartyId": "m"}, {"SubscriberKey": "SK-1"}]).json()["requestId"]
    complete = recorded("async_status_complete.json")["response"]
    ours = status(sandbox, token, request_id)
    assert set(complete) <= set(ours) and set(ours["status"]) == set(complete["status"])
    assert ours["status"]["resultStatus"] == "Has Errors"
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+$", ours["status"]["callDateTime"])
    real = recorded("async_results_has_errors.json")["response"]
    page = results(sandbox, token, request_id)
    assert set(page) == set(real)
    error, ok = page["items"]
    assert set(error) == set(real["items"][0]) and set(error["errors"][0]) == set(real["items"][0]["errors"][0])
    assert (error["message"], error["errorCode"]) == (real["items"][0]["message"], real["items"][0]["errorCode"])
    assert ok == real["items"][1]
    missing = recorded("async_status_not_found.json")["response"]
    gone = status(sandbox, token, "efd98722-5826-418f-849e-c13a06ad3622")
    assert set(gone) == set(missing)
    assert gone["resultMessages"][0]["message"] == missing["resultMessages"][0]["message"]


def test_an_unknown_data_extension_has_the_recorded_shape(sandbox, token):
    real = recorded("async_submit_unknown_data_extension.json")
    answer = requests.put(
        f"{sandbox.url}/data/v1/async/dataextensions/a52c65d8-8938-f111-a5ab-d4f5ef4cd471/rows",
        json={"items": [{"SubscriberKey": "SK-1"}]},
        headers=auth(token),
        timeout=5,
    )
    assert answer.status_code == real["status"]
    assert set(answer.json()) == set(real["response"])
    assert answer.json()["resultMessages"][0]["message"] == real["response"]["resultMessages"][0]["message"]


def test_each_business_unit_has_its_own_rows_requests_and_subscribers(sandbox):
    """A token acts on its MID's unit: its data extension, its request IDs, its All Subscribers."""
    sandbox.configure(business_units="500002", soap_page_size=1)
    sandbox.declare(INDIVIDUAL, mid="500002")  # the child unit's own "Individual"
    parent, child = get_token(sandbox), get_token(sandbox, account_id="500002")
    answer = submit(sandbox, child, [{"SubscriberKey": "SK-C", "GlobalPartyId": "m-c"}])
    request_id = answer.json()["requestId"]
    assert "SK-C" in sandbox.rows("Individual", mid="500002") and "SK-C" not in sandbox.rows("Individual")
    assert status(sandbox, child, request_id)["status"]["requestStatus"] == "Complete"
    # The parent unit's token does not know the child unit's request.
    other = status(sandbox, parent, request_id)
    assert other["resultMessages"][0]["resultCode"] == "AsyncRequestStatusNotFound"
    assert results(sandbox, parent, request_id)["resultMessages"][0]["resultCode"] == "AsyncRequestStatusNotFound"

    def soap(body: bytes) -> str:
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "Retrieve"}
        return requests.post(f"{sandbox.url}/Service.asmx", data=body, headers=headers, timeout=5).text

    for key in ("SK-1", "SK-2"):
        sandbox.put_subscriber(key, f"{key}@example.com", "Active", mid="500002")
    sandbox.put_subscriber("SK-P", "p@example.com", "Unsubscribed")
    first = soap(subscriber_soap.retrieve_request(child, modified_after=None))
    assert "SK-1" in first and "SK-P" not in first and "MoreDataAvailable" in first
    request = re.search(r"<RequestID>([^<]+)</RequestID>", first).group(1)
    # Another unit's token cannot continue the child unit's read.
    refused = soap(subscriber_soap.retrieve_request(parent, modified_after=None, continue_id=request))
    assert "invalid or has expired" in refused and "SK-2" not in refused
    parent_read = soap(subscriber_soap.retrieve_request(parent, modified_after=None))
    assert "SK-P" in parent_read and "SK-1" not in parent_read
    # An Update with the parent's token does not find the child unit's subscriber.
    update = requests.post(
        f"{sandbox.url}/Service.asmx",
        data=subscriber_soap.update_request(parent, ["SK-1"]),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "Update"},
        timeout=5,
    ).text
    assert "Subscriber not found" in update
    assert sandbox.subscribers(mid="500002")["SK-1"]["status"] == "Active"
