"""With MC_ERASE_CONTACTS, a GDPR erasure deletes the contact in Marketing Cloud, and the record shows how it went.

Over real HTTP: the journey activity on the live server brings the person in; the steward
erases in the admin; the sandbox answers the contacts delete and its status as the reference
documents them (tests/fixtures/marketing_cloud/contacts_delete_*.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from customers.models import Individual
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.erasure import TASK
from integrations.marketing_cloud.models import ContactDeletion
from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = Path(__file__).parent / "fixtures" / "marketing_cloud"


def erase(admin_client, individual: Individual) -> None:
    response = admin_client.post(
        "/admin/customers/individual/", {"action": "erase", "_selected_action": [individual.pk]}
    )
    assert response.status_code == 302


def person(journey) -> Individual:
    journey.execute(subscriber())
    run_queued()
    return Individual.objects.get()


@pytest.fixture
def erase_contacts(settings):
    settings.MC_ERASE_CONTACTS = True


def test_without_the_setting_only_the_master_id_is_cleared(journey, sandbox, admin_client):
    ada = person(journey)
    erase(admin_client, ada)
    run_queued()
    assert not ContactDeletion.objects.exists()
    assert sandbox.contact_deletions() == []
    assert sandbox.rows("Individual")["SK-1001"]["GlobalPartyId"] == ""


def test_an_erasure_deletes_the_contact_and_the_record_shows_each_state(journey, sandbox, admin_client, erase_contacts):
    ada = person(journey)
    erase(admin_client, ada)
    deletion = ContactDeletion.objects.get()
    assert deletion.state == "pending" and deletion.individual_id == ada.pk and deletion.contact_key == "SK-1001"
    page = admin_client.get(f"/admin/customers/individual/{ada.pk}/change/").content.decode()
    assert "mc-contact-deletions" in page and "Pending" in page
    run_queued(limit=3)  # the write-back and the deletion; the status poll waits a minute
    [operation] = sandbox.contact_deletions()
    assert operation["keys"] == ["SK-1001"] and operation["status"] == "Pending"
    deletion.refresh_from_db()
    assert deletion.state == "accepted" and deletion.operation_id == operation["operationID"]
    page = admin_client.get(f"/admin/customers/individual/{ada.pk}/change/").content.decode()
    assert "Accepted" in page and str(operation["operationID"]) in page
    # Hours later Marketing Cloud finishes; the next poll records it.
    sandbox.finish_contact_deletion(operation["operationID"])
    assert (TASK, "0 sent, 1 polled") in run_queued()
    deletion.refresh_from_db()
    assert deletion.state == "accepted" and deletion.operation_status == "Completed" and deletion.completed_at
    assert "SK-1001" not in sandbox.subscribers()
    listing = admin_client.get("/admin/marketing_cloud/contactdeletion/").content.decode()
    assert "Completed" in listing and "SK-1001" not in listing


def test_an_aborted_operation_fails(journey, sandbox, admin_client, erase_contacts):
    erase(admin_client, person(journey))
    run_queued(limit=3)
    [operation] = sandbox.contact_deletions()
    sandbox.finish_contact_deletion(operation["operationID"], "Aborted")
    run_queued()
    deletion = ContactDeletion.objects.get()
    assert deletion.state == "failed" and deletion.operation_status == "Aborted"
    assert "ended Aborted" in deletion.last_error


def test_a_refused_delete_fails_and_a_steward_retries_it(journey, sandbox, admin_client, erase_contacts):
    erase(admin_client, person(journey))
    sandbox.inject("400", path_contains="/contacts/v1/contacts/actions/delete")
    run_queued()
    deletion = ContactDeletion.objects.get()
    assert deletion.state == "failed" and "10005" in deletion.last_error and deletion.attempts == 1
    admin_client.post(
        "/admin/marketing_cloud/contactdeletion/", {"action": "retry_now", "_selected_action": [deletion.pk]}
    )
    run_queued(limit=2)
    deletion.refresh_from_db()
    assert deletion.state == "accepted" and deletion.operation_id is not None


def test_a_server_error_is_retried(journey, sandbox, admin_client, erase_contacts):
    erase(admin_client, person(journey))
    # With a Retry-After: the backoff's full jitter alone can draw a delay of almost nothing,
    # and then the retry is already due when the first run looks (seen on a loaded machine).
    sandbox.inject("503", path_contains="/contacts/v1/contacts/actions/delete", retry_after=30)
    run_queued(include_delayed=False)
    deletion = ContactDeletion.objects.get()
    assert deletion.state == "pending" and deletion.attempts == 1 and "503" in deletion.last_error
    run_queued(limit=1)  # the retry, after its backoff
    deletion.refresh_from_db()
    assert deletion.state == "accepted" and deletion.attempts == 2


def _call(sandbox, method: str, path: str, **kwargs):
    token = MarketingCloudClient.from_settings().get_token().access_token
    return requests.request(
        method, f"{sandbox.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=5, **kwargs
    )


def test_the_sandbox_answers_with_the_documented_shapes(sandbox):
    real_delete = json.loads((FIXTURES / "contacts_delete_response.json").read_text())["response"]
    real_status = json.loads((FIXTURES / "contacts_delete_status_response.json").read_text())["response"]
    answer = _call(
        sandbox,
        "POST",
        "/contacts/v1/contacts/actions/delete?type=keys",
        json={"values": ["postmandemo2"], "DeleteOperationType": "ContactAndAttributes"},
    )
    assert answer.status_code == 200 and set(answer.json()) == set(real_delete)
    assert answer.json()["operationInitiated"] is True and isinstance(answer.json()["operationID"], int)
    status = _call(
        sandbox, "GET", f"/contacts/v1/contacts/actions/delete/status?operationID={answer.json()['operationID']}"
    )
    assert status.status_code == 200 and set(status.json()) == set(real_status)
    assert set(status.json()["operation"]) == set(real_status["operation"])


@pytest.mark.parametrize(
    ("query", "body", "errorcode"),
    [
        ("type=keys", {"values": ["k"], "DeleteOperationType": "AttributesOnly"}, 10005),
        ("type=keys", {"values": ["k"]}, 10002),
        ("type=keys", {"values": [], "DeleteOperationType": "ContactAndAttributes"}, 10002),
        ("type=keys", {"values": ["k"], "DeleteOperationType": "ContactAndAttributes", "Extra": 1}, 10000),
        ("type=ids", {"values": ["k"], "DeleteOperationType": "ContactAndAttributes"}, 10005),
    ],
)
def test_the_sandbox_refuses_a_bad_delete_with_the_rest_error_shape(sandbox, query, body, errorcode):
    answer = _call(sandbox, "POST", f"/contacts/v1/contacts/actions/delete?{query}", json=body)
    assert answer.status_code == 400
    assert answer.json()["errorcode"] == errorcode and set(answer.json()) >= {"message", "errorcode", "documentation"}


def test_the_sandbox_knows_no_other_operation(sandbox):
    assert _call(sandbox, "GET", "/contacts/v1/contacts/actions/delete/status?operationID=999").status_code == 404
    assert _call(sandbox, "GET", "/contacts/v1/contacts/actions/delete/status?operationID=x").status_code == 400
