"""The Salesforce core connector: master ID and changes upserted on Contact by external ID, over real HTTP."""

from __future__ import annotations

import pytest

from customers.models import Individual
from integrations.downstream.models import Delivery, DownstreamTarget
from sandboxes.salesforce.server import SalesforceSandbox, SalesforceSandboxConfig
from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def salesforce(settings):
    config = SalesforceSandboxConfig()
    settings.SF_CLIENT_ID, settings.SF_CLIENT_SECRET = config.client_id, config.client_secret
    settings.SF_SOBJECT, settings.SF_MASTER_ID_FIELD = "Contact", "Global_Customer_Id__c"
    with SalesforceSandbox(config=config) as server:
        server.start()
        yield server


@pytest.fixture
def sf_target(salesforce):
    return DownstreamTarget.objects.create(name="salesforce", kind=DownstreamTarget.SALESFORCE, url=salesforce.url)


def test_changes_are_upserted_by_master_id(journey, sandbox, salesforce, sf_target):
    journey.execute(subscriber())
    run_queued()
    master_id = Individual.objects.get().master_id
    contact = salesforce.records("Contact")[master_id]
    assert contact["FirstName"] == "Ada" and contact["Email"] == "ada.lovelace@example.com"
    assert contact["HasOptedOutOfEmail"] is False
    journey.execute(subscriber(LastName="King", Status="Unsubscribed", ModifiedDate="2026-11-05T00:00:00Z"))
    run_queued()
    contact = salesforce.records("Contact")[master_id]
    assert contact["LastName"] == "King" and contact["HasOptedOutOfEmail"] is True
    assert salesforce.count("POST", "/services/oauth2/token") == 1
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}


def test_expired_session_is_refreshed_once(journey, sandbox, salesforce, sf_target):
    journey.execute(subscriber())
    run_queued()
    salesforce.expire_tokens()
    journey.execute(subscriber(FirstName="Augusta", ModifiedDate="2026-11-05T00:00:00Z"))
    run_queued()
    assert salesforce.count("POST", "/services/oauth2/token") == 2
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}


def test_request_limit_and_outages_are_retried_bad_fields_dead_lettered(
    journey, sandbox, salesforce, sf_target, settings
):
    salesforce.inject("503", count=2)
    journey.execute(subscriber())
    run_queued()
    assert Delivery.objects.get().status == "delivered" and Delivery.objects.get().attempts == 3
    settings.SF_MASTER_ID_FIELD = "No_Such_Field__c"
    journey.execute(subscriber(key="SK-2", email="other@example.com"))
    run_queued()
    dead = Delivery.objects.get(status="dead")
    # Salesforce's error code is kept, its message (text of the answer) is not.
    assert dead.last_status_code == 404 and dead.last_error.startswith("Salesforce refused with 404 NOT_FOUND (")
    assert "external ID field" not in dead.last_error and dead.last_response_bytes > 0
