"""Several Marketing Cloud business units: attribution by JWT secret, write-back to the subscriber's unit."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import replace

import pytest
import requests
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import transaction

from customers.models import CrossReference, Individual
from hub.env import check_unknown_names, env_business_units
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud import bulk_writeback, business_units, writeback
from integrations.marketing_cloud.backfill import import_subscribers
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.marketing_cloud.ens import APPLY_TASK as ENS_APPLY_TASK
from integrations.marketing_cloud.erasure import TASK as ERASURE_TASK
from integrations.marketing_cloud.models import (
    BulkWriteback,
    ContactDeletion,
    EnsCallback,
    EnsNotification,
    ReconciliationState,
    SubscriberStatusSync,
    UnsubscribeWriteback,
)
from integrations.marketing_cloud.poller import poll_data_extension
from integrations.marketing_cloud.schema import INDIVIDUAL, DataExtensionField, DataExtensionSchema
from integrations.marketing_cloud.status_sync import read_statuses_task
from integrations.models import AccessToken
from integrations.transport import PermanentError
from sandboxes.marketing_cloud.ens import (
    email_open_event,
    email_unsubscribe_event,
    encode_batch,
    new_signature_key,
    sign_ens,
)
from tests.conftest import journey_jwt, subscriber
from tests.queue import run_queued
from tests.test_mc_check import mc_check

MID_A, MID_B = "100001", "100002"
SECRET_A = "unit-a-jwt-signing-secret-0123456789abcdef"
SECRET_B = "unit-b-jwt-signing-secret-fedcba9876543210"


@pytest.fixture
def two_units(sandbox, settings):
    """Unit A (the default, the sandbox's parent unit) and unit B, each with its own Individual data extension."""
    sandbox.configure(account_id=MID_A, business_units=MID_B)
    sandbox.declare(replace(INDIVIDUAL, key="Individual_B"), mid=MID_B)
    settings.MC_JWT_SECRET = ""
    settings.MC_BUSINESS_UNITS = (
        {"name": "A", "mid": MID_A, "de_key": "Individual", "jwt_secret": SECRET_A, "ens_signature_key": ""},
        {"name": "B", "mid": MID_B, "de_key": "Individual_B", "jwt_secret": SECRET_B, "ens_signature_key": ""},
    )
    return sandbox


def test_a_call_signed_by_unit_b_lands_with_its_mid_and_is_written_to_its_data_extension_only(journey, two_units):
    assert journey.execute(subscriber("SK-B1"), secret=SECRET_B).status_code == 200
    assert journey.execute(subscriber("SK-A1", email="a1@example.com"), secret=SECRET_A).status_code == 200
    run_queued()

    b_xref = CrossReference.objects.get(system=MARKETING_CLOUD, external_id="SK-B1")
    a_xref = CrossReference.objects.get(system=MARKETING_CLOUD, external_id="SK-A1")
    assert (b_xref.business_unit, a_xref.business_unit) == (MID_B, MID_A)
    assert b_xref.writeback_state == a_xref.writeback_state == "written"
    b_rows = two_units.rows("Individual_B", mid=MID_B)
    a_rows = two_units.rows("Individual")
    assert b_rows["SK-B1"]["GlobalPartyId"] == b_xref.individual.master_id
    assert "SK-B1" not in a_rows and "SK-A1" not in b_rows
    assert a_rows["SK-A1"]["GlobalPartyId"] == a_xref.individual.master_id
    # More write-backs for both units reuse the tokens: one cached token per MID, each fetched once.
    assert journey.execute(subscriber("SK-B3", email="b3@example.com"), secret=SECRET_B).status_code == 200
    assert journey.execute(subscriber("SK-A3", email="a3@example.com"), secret=SECRET_A).status_code == 200
    run_queued()
    assert {"SK-B1", "SK-B3"} <= set(two_units.rows("Individual_B", mid=MID_B))
    assert {"SK-A1", "SK-A3"} <= set(two_units.rows("Individual"))
    assert two_units.count("POST", "/v2/token") == 2
    assert sorted(AccessToken.objects.values_list("system", flat=True)) == [
        f"{MARKETING_CLOUD}:{MID_A}",
        f"{MARKETING_CLOUD}:{MID_B}",
    ]


def test_a_call_signed_with_no_unit_s_secret_is_refused(journey, two_units):
    answer = journey.execute(subscriber("SK-X"), secret="some-other-secret-not-configured-anywhere")
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["field"] == "body"
    assert not Individual.objects.exists()


def test_an_expired_call_of_unit_b_is_refused_as_expired(journey, two_units):
    answer = journey.execute(subscriber("SK-B2"), secret=SECRET_B, now=1_000_000)
    assert answer.status_code == 401
    assert answer.json()["title"] == "Expired token"


@pytest.mark.django_db
def test_unit_b_s_token_acts_on_unit_b_only(two_units):
    unit_b = business_units.unit_for_mid(MID_B)
    client = MarketingCloudClient.from_settings(unit=unit_b)
    client.upsert_row("Individual_B", "SubscriberKey", "SK-T", {"GlobalPartyId": "x"})
    # Unit B has no "Individual": the parent unit's data extension is not reachable with B's token.
    with pytest.raises(PermanentError):
        client.upsert_row("Individual", "SubscriberKey", "SK-T", {"GlobalPartyId": "x"})
    assert "SK-T" not in two_units.rows("Individual")


def test_business_units_are_read_from_the_environment_and_checked(monkeypatch):
    monkeypatch.setenv("MC_BUSINESS_UNITS", "A,B")
    for unit, mid, secret in (("A", MID_A, SECRET_A), ("B", MID_B, SECRET_B)):
        monkeypatch.setenv(f"MC_BU_{unit}_MID", mid)
        monkeypatch.setenv(f"MC_BU_{unit}_JWT_SECRET", secret)
    monkeypatch.setenv("MC_BU_B_DE_KEY", "Individual_B")
    check_unknown_names()  # the per-unit names of listed units are known
    units = env_business_units("MC_BUSINESS_UNITS", default_de_key="Individual")
    assert [(u["name"], u["mid"], u["de_key"]) for u in units] == [
        ("A", MID_A, "Individual"),
        ("B", MID_B, "Individual_B"),
    ]
    monkeypatch.setenv("MC_BU_C_MID", "3")
    with pytest.raises(ImproperlyConfigured, match="MC_BU_C_MID"):
        check_unknown_names()  # C is not listed: a typo
    monkeypatch.delenv("MC_BU_C_MID")
    monkeypatch.setenv("MC_BU_B_MID", MID_A)
    with pytest.raises(ImproperlyConfigured, match="same MID"):
        env_business_units("MC_BUSINESS_UNITS", default_de_key="Individual")
    monkeypatch.setenv("MC_BU_B_MID", MID_B)
    monkeypatch.setenv("MC_BU_B_JWT_SECRET", SECRET_A)
    with pytest.raises(ImproperlyConfigured, match="same JWT_SECRET"):
        env_business_units("MC_BUSINESS_UNITS", default_de_key="Individual")
    monkeypatch.delenv("MC_BU_B_JWT_SECRET")
    with pytest.raises(ImproperlyConfigured, match="MC_BU_B_JWT_SECRET"):
        env_business_units("MC_BUSINESS_UNITS", default_de_key="Individual")
    monkeypatch.setenv("MC_BU_B_JWT_SECRET", SECRET_B)
    monkeypatch.setenv("MC_BU_B_MID", "brand-b")
    with pytest.raises(ImproperlyConfigured, match="numeric MID"):
        env_business_units("MC_BUSINESS_UNITS", default_de_key="Individual")


@pytest.mark.django_db(transaction=True)
def test_an_opt_out_is_sent_to_the_subscriber_s_unit_with_its_token(journey, two_units, admin_client):
    two_units.put_subscriber("SK-B1", "ada.lovelace@example.com", "Active", mid=MID_B)
    assert journey.execute(subscriber("SK-B1"), secret=SECRET_B).status_code == 200
    run_queued()
    person = CrossReference.objects.get(system=MARKETING_CLOUD, external_id="SK-B1").individual
    answer = admin_client.post("/admin/customers/individual/", {"action": "opt_out", "_selected_action": [person.pk]})
    assert answer.status_code == 302
    run_queued()
    assert UnsubscribeWriteback.objects.get().state == "written"
    assert two_units.subscribers(mid=MID_B)["SK-B1"]["status"] == "Unsubscribed"
    assert [unit for operation, unit in two_units.soap_calls() if operation == "UpdateRequest"] == [MID_B]


@pytest.mark.django_db(transaction=True)
def test_an_erasure_deletes_the_contact_through_the_subscriber_s_unit(journey, two_units, admin_client, settings):
    settings.MC_ERASE_CONTACTS = True
    assert journey.execute(subscriber("SK-B1"), secret=SECRET_B).status_code == 200
    run_queued()
    person = CrossReference.objects.get(system=MARKETING_CLOUD, external_id="SK-B1").individual
    answer = admin_client.post("/admin/customers/individual/", {"action": "erase", "_selected_action": [person.pk]})
    assert answer.status_code == 302
    assert ContactDeletion.objects.get().business_unit == MID_B
    run_queued(limit=3)
    [operation] = two_units.contact_deletions()
    assert operation["keys"] == ["SK-B1"] and operation["unit"] == MID_B
    # Its status is read with unit B's token too (another unit's token does not find the operation).
    two_units.finish_contact_deletion(operation["operationID"])
    assert (ERASURE_TASK, "0 sent, 1 polled") in run_queued()
    deletion = ContactDeletion.objects.get()
    assert deletion.operation_status == "Completed" and deletion.completed_at
    # The erased subscriber's master ID is cleared in unit B's data extension, not written to A's.
    assert two_units.rows("Individual_B", mid=MID_B)["SK-B1"]["GlobalPartyId"] == ""
    assert "SK-B1" not in two_units.rows("Individual")


def test_the_steward_sees_each_unit_in_the_admin_and_on_the_dashboard(journey, two_units, admin_client):
    assert journey.execute(subscriber("SK-B1"), secret=SECRET_B).status_code == 200
    run_queued()
    xref = CrossReference.objects.get(system=MARKETING_CLOUD, external_id="SK-B1")
    listing = admin_client.get("/admin/customers/crossreference/", {"business_unit": MID_B}).content.decode()
    assert "SK-B1" in listing and MID_B in listing
    detail = admin_client.get(f"/admin/customers/crossreference/{xref.pk}/change/").content.decode()
    assert "Business unit" in detail and MID_B in detail
    # A write-back that keeps failing for unit B shows on B's line, not A's.
    CrossReference.objects.filter(pk=xref.pk).update(writeback_state="failed")
    page = admin_client.get("/admin/dashboard/").content.decode()
    section = page[page.index('id="mc-business-units"') :]
    line_a = section[section.index(">A<") : section.index(">B<")]
    line_b = section[section.index(">B<") : section.index("</table>")]
    assert MID_A in line_a and "Individual<" in line_a and "<td>0</td><td>0</td><td>0</td>" in line_a
    assert MID_B in line_b and "Individual_B" in line_b and "<td>0</td><td>1</td><td>0</td>" in line_b
    assert "none yet" in line_a and "expires" in line_b  # only unit B has called Marketing Cloud


@pytest.mark.django_db(transaction=True)
def test_an_ens_batch_is_attributed_to_the_unit_whose_key_signs_it(live_server, two_units, settings):
    key_a, key_b = new_signature_key(), new_signature_key()
    settings.MC_BUSINESS_UNITS = tuple(
        {**unit, "ens_signature_key": key} for unit, key in zip(settings.MC_BUSINESS_UNITS, (key_a, key_b), strict=True)
    )
    url = f"{live_server.url}/api/v1/marketing-cloud/ens"

    def post(events: list[dict], key: str) -> int:
        body = encode_batch(events)
        headers = {"Content-Type": "application/json", "x-sfmc-ens-signature": sign_ens(body, key)}
        return requests.post(url, data=body, headers=headers, timeout=5).status_code

    assert post([email_open_event("SK-B1", composite_id="b-1")], key_b) == 200
    assert post([email_open_event("SK-A1", composite_id="a-1")], key_a) == 200
    assert post([email_open_event("SK-X1", composite_id="x-1")], new_signature_key()) == 401
    assert dict(EnsNotification.objects.values_list("composite_id", "business_unit")) == {"b-1": MID_B, "a-1": MID_A}


@pytest.mark.django_db
def test_the_poller_reads_each_unit_s_data_extension_and_records_its_unit(two_units):
    row = {"EmailAddress": "row-b@example.com", "FirstName": "Row", "LastName": "B", "Status": "Active"}
    row_b = {**row, "ModifiedDate": "2026-11-10T08:00:00", "CreatedDate": "2026-11-01T00:00:00"}
    unit_b = business_units.unit_for_mid(MID_B)
    MarketingCloudClient.from_settings(unit=unit_b).upsert_row("Individual_B", "SubscriberKey", "ROW-B", row_b)
    row_a = {**row_b, "EmailAddress": "row-a@example.com", "LastName": "A"}
    MarketingCloudClient.from_settings().upsert_row("Individual", "SubscriberKey", "ROW-A", row_a)
    assert poll_data_extension() == "A: 1 rows in 1 page(s), 1 sent; B: 1 rows in 1 page(s), 1 sent"
    run_queued()
    units = dict(CrossReference.objects.filter(system=MARKETING_CLOUD).values_list("external_id", "business_unit"))
    assert units == {"ROW-A": MID_A, "ROW-B": MID_B}
    states = {(s.business_unit, s.de_key): s.last_status for s in ReconciliationState.objects.all()}
    assert states == {(MID_A, "Individual"): "succeeded", (MID_B, "Individual_B"): "succeeded"}


@pytest.mark.django_db(transaction=True)
def test_the_activity_s_lifecycle_calls_are_verified_with_each_unit_s_secret(live_server, two_units):
    url = f"{live_server.url}/api/v1/marketing-cloud/journey/publish"
    body = journey_jwt({}, secret=SECRET_B)
    assert requests.post(url, data=body, headers={"Content-Type": "application/jwt"}, timeout=5).status_code == 200
    forged = journey_jwt({}, secret="not-any-unit-s-secret-0123456789abcdef")
    assert requests.post(url, data=forged, headers={"Content-Type": "application/jwt"}, timeout=5).status_code == 401


T0 = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)


def unit_lines(admin_client) -> dict[str, str]:
    """The dashboard's business-unit table, one HTML row per unit name."""
    page = admin_client.get("/admin/dashboard/").content.decode()
    section = page[page.index('id="mc-business-units"') :]
    section = section[: section.index("</table>")]
    return {row.split("</a>", 1)[0].rsplit(">", 1)[-1]: row for row in section.split("<tr>")[2:]}


def golden(key: str) -> Individual:
    return CrossReference.objects.get(system=MARKETING_CLOUD, external_id=key).individual


@pytest.mark.django_db(transaction=True)
def test_each_unit_s_status_read_uses_its_token_and_reaches_that_unit_s_subscribers_only(
    journey, two_units, admin_client
):
    for key, secret in (("SK-A1", SECRET_A), ("SK-B1", SECRET_B), ("SK-B2", SECRET_B)):
        assert journey.execute(subscriber(key, email=f"{key.lower()}@example.com"), secret=secret).status_code == 200
    run_queued()
    # Unit A holds a subscriber SK-B1 of its own, unsubscribed there; unit B's SK-B1 is Active.
    two_units.put_subscriber("SK-A1", "sk-a1@example.com", "Unsubscribed", modified=T0, mid=MID_A)
    two_units.put_subscriber("SK-B1", "other@example.com", "Unsubscribed", modified=T0, mid=MID_A)
    two_units.put_subscriber("SK-B1", "sk-b1@example.com", "Active", modified=T0, mid=MID_B)
    two_units.put_subscriber("SK-B2", "sk-b2@example.com", "Unsubscribed", modified=T0, mid=MID_B)

    summary = read_statuses_task()
    assert summary.startswith("A: 2 subscribers in 1 page(s): 1 applied, 0 unchanged, 1 unknown; B: 2 subscribers")
    assert golden("SK-A1").do_not_market_since == T0
    assert golden("SK-B1").do_not_market_since is None  # unit A's SK-B1 is another subscriber
    assert golden("SK-B2").do_not_market_since == T0  # only unit B's token sees it
    assert CrossReference.objects.get(external_id="SK-B1").source_status == "Active"
    assert [unit for operation, unit in two_units.soap_calls() if operation == "RetrieveRequestMsg"] == ["", MID_B]
    states = {s.business_unit: (s.last_status, s.last_read, s.watermark) for s in SubscriberStatusSync.objects.all()}
    assert states == {MID_A: ("succeeded", 2, T0), MID_B: ("succeeded", 2, T0)}
    # mc_reconcile reads each unit too, and says which line is which.
    out = io.StringIO()
    call_command("mc_reconcile", stdout=out)
    assert f"All Subscribers (A (MID {MID_A})): read 2" in out.getvalue()
    assert f"All Subscribers (B (MID {MID_B})): read 2" in out.getvalue()
    # The dashboard's line of each unit links to its own status read and reconciliation, with their last run.
    lines = unit_lines(admin_client)
    for unit, mid in (("A", MID_A), ("B", MID_B)):
        read = SubscriberStatusSync.objects.get(business_unit=mid)
        reconciliation = ReconciliationState.objects.get(business_unit=mid)
        assert f'subscriberstatussync/{read.pk}/change/">succeeded</a>' in lines[unit]
        assert f'reconciliationstate/{reconciliation.pk}/change/">succeeded</a>' in lines[unit]
    # The steward sees one status read per unit, with its watermark and last run.
    page = admin_client.get("/admin/marketing_cloud/subscriberstatussync/").content.decode()
    assert f"A (MID {MID_A})" in page and f"B (MID {MID_B})" in page
    listing = admin_client.get("/admin/marketing_cloud/reconciliationstate/").content.decode()
    assert f"A (MID {MID_A})" in listing and f"B (MID {MID_B})" in listing


@pytest.mark.django_db(transaction=True)
def test_an_ens_unsubscribe_reaches_the_subscriber_of_the_unit_whose_key_verified_it_only(
    journey, two_units, settings, admin_client, live_server
):
    key_a, key_b = new_signature_key(), new_signature_key()
    settings.MC_BUSINESS_UNITS = tuple(
        {**unit, "ens_signature_key": key} for unit, key in zip(settings.MC_BUSINESS_UNITS, (key_a, key_b), strict=True)
    )
    # Each unit has a subscriber with SubscriberID 501: two people, one per unit.
    for key, secret in (("SK-A1", SECRET_A), ("SK-B1", SECRET_B)):
        args = subscriber(key, email=f"{key.lower()}@example.com", SubscriberId="501")
        assert journey.execute(args, secret=secret).status_code == 200
    run_queued()
    assert set(CrossReference.objects.values_list("system_record_id", flat=True)) == {"501"}
    event = email_unsubscribe_event("SK-B1", subscriber_id=501, composite_id="u-b", email_address="sk-b1@example.com")
    body = encode_batch([event])
    headers = {"Content-Type": "application/json", "x-sfmc-ens-signature": sign_ens(body, key_b)}
    url = f"{live_server.url}/api/v1/marketing-cloud/ens"
    assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 200
    assert (ENS_APPLY_TASK, "1 applied, 0 unmatched, 0 stored") in run_queued()
    lines = unit_lines(admin_client)  # ENS received in 24 hours / waiting, on the verifying unit's line
    assert f'?business_unit={MID_B}">1 / 0</a>' in lines["B"] and f'?business_unit={MID_A}">0 / 0</a>' in lines["A"]
    assert golden("SK-B1").do_not_market_since is not None
    assert golden("SK-A1").do_not_market_since is None  # unit A's SubscriberID 501 is someone else
    notification = EnsNotification.objects.get()
    assert (notification.business_unit, notification.master_id) == (MID_B, golden("SK-B1").master_id)
    # The same event verified by unit A's key reaches unit A's subscriber instead.
    event_a = email_unsubscribe_event("SK-A1", subscriber_id=501, composite_id="u-a", email_address="x@example.com")
    body = encode_batch([event_a])
    headers["x-sfmc-ens-signature"] = sign_ens(body, key_a)
    assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 200
    run_queued()
    assert golden("SK-A1").do_not_market_since is not None
    # The steward filters the notifications by unit; each shows the golden record it reached.
    page = admin_client.get("/admin/marketing_cloud/ensnotification/", {"business_unit": MID_B}).content.decode()
    assert golden("SK-B1").master_id in page and golden("SK-A1").master_id not in page


@pytest.mark.django_db
def test_bulk_write_backs_of_two_units_land_in_each_unit_s_data_extension_and_map_their_row_errors(
    two_units, settings, monkeypatch, tmp_path
):
    # Both units name their data extension "Individual"; unit B's keeps keys of at most 12 characters.
    short_keys = DataExtensionSchema(
        "Individual",
        "Individual",
        (DataExtensionField("SubscriberKey", "Text", 12, is_primary_key=True), *INDIVIDUAL.fields[1:]),
    )
    two_units.declare(short_keys, mid=MID_B)
    settings.MC_BUSINESS_UNITS = tuple({**unit, "de_key": "Individual"} for unit in settings.MC_BUSINESS_UNITS)
    settings.MC_ASYNC_WRITEBACK_THRESHOLD = 100
    monkeypatch.setattr(bulk_writeback, "MAX_ROWS", 150)
    monkeypatch.setattr(writeback, "STARVED_AFTER", 3600.0)
    long_ones = {7, 77, 149}

    def key(i: int) -> str:
        unit, n = ("A", i) if i < 150 else ("B", i - 150)
        return f"{unit}-LONG-KEY-{n:05d}" if n in long_ones else f"{unit}-{n:05d}"

    path = tmp_path / "export.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["SubscriberKey", "EmailAddress", "FirstName", "LastName"])
        for i in range(300):
            writer.writerow([key(i), f"bulk{i}@example.com", "Bulk", f"Person{i}"])
    # The write-backs are queued by the import; the second half are unit B's subscribers.
    with transaction.atomic():
        assert import_subscribers(path, batch_size=100).rows_done == 300
        CrossReference.objects.filter(external_id__startswith="B-").update(business_unit=MID_B)
    run_queued()

    requests_made = {r.business_unit: (r.rows, r.rows_written, r.rows_failed) for r in BulkWriteback.objects.all()}
    assert requests_made == {"": (150, 150, 0), MID_B: (150, 147, 3)}
    assert {r["unit"] for r in two_units.async_requests()} == {"", MID_B}
    rows_a, rows_b = two_units.rows("Individual"), two_units.rows("Individual", mid=MID_B)
    assert {k for k in rows_a if not k.startswith("A-")} == set()
    assert {k for k in rows_b if not k.startswith("B-")} == set()
    xrefs = CrossReference.objects.select_related("individual")
    for xref in xrefs.filter(business_unit=""):
        assert (
            xref.writeback_state == "written" and rows_a[xref.external_id]["GlobalPartyId"] == xref.individual.master_id
        )
    failed = {x.external_id: x.writeback_error for x in xrefs.filter(writeback_state="failed")}
    assert set(failed) == {f"B-LONG-KEY-{n:05d}" for n in long_ones}
    assert all("exceeds the maximum length of 12" in error for error in failed.values())
    for xref in xrefs.filter(business_unit=MID_B).exclude(writeback_state="failed"):
        assert (
            xref.writeback_state == "written" and rows_b[xref.external_id]["GlobalPartyId"] == xref.individual.master_id
        )


@pytest.mark.django_db(transaction=True)
def test_ens_callbacks_are_registered_and_the_tenant_checked_per_unit(live_server, two_units, settings, admin_client):
    settings.DEBUG = True  # the live test server speaks http, as under `make run`
    url = f"{live_server.url}/api/v1/marketing-cloud/ens"
    out = io.StringIO()
    call_command("mc_ens_register", url, "--allow-insecure", stdout=out)
    assert f"A (MID {MID_A}): Callback" in out.getvalue() and f"B (MID {MID_B}): Callback" in out.getvalue()
    # One callback in each unit's ENS (made with that unit's token), each with a key of its own.
    at_ens = {c["unit"]: c for c in two_units.callbacks()}
    assert set(at_ens) == {"", MID_B} and all(c["verified"] for c in at_ens.values())
    stored = {c.business_unit: c for c in EnsCallback.objects.all()}
    assert set(stored) == {MID_A, MID_B}
    assert stored[MID_B].callback_id == at_ens[MID_B]["callbackId"]
    assert stored[MID_A].signature_key != stored[MID_B].signature_key
    assert {s["callbackId"] for s in two_units.subscriptions()} == {c.callback_id for c in stored.values()}
    # A batch signed with unit B's callback key is unit B's.
    event = email_open_event("SK-B1", composite_id="open-b")
    assert two_units.deliver_ens([event], callback_id=stored[MID_B].callback_id) == [200]
    assert EnsNotification.objects.get().business_unit == MID_B
    # Run again: each unit's callback is reused, none is added.
    again = io.StringIO()
    call_command("mc_ens_register", url, "--allow-insecure", stdout=again)
    assert again.getvalue().count("was already registered for this URL") == 2
    assert EnsCallback.objects.count() == 2 and len(two_units.callbacks()) == 2

    code, lines = mc_check(live_server.url)
    assert code == 0, "\n".join(lines)
    for unit, mid in (("A", MID_A), ("B", MID_B)):
        assert any(line.startswith(f"OK    token ({unit}): for MID {mid}") for line in lines)
        assert any(line.startswith(f"OK    ENS callback ({unit}): {stored[mid].callback_id}") for line in lines)
    assert any(line.startswith("OK    data extension (B): 'Individual_B'") for line in lines)
    assert sum(1 for line in lines if line.startswith("OK    activity config.json")) == 1
    # Unit B pointed at a data extension it lacks: its line fails with the unit's setting, A's stays OK.
    settings.MC_BUSINESS_UNITS = (settings.MC_BUSINESS_UNITS[0], {**settings.MC_BUSINESS_UNITS[1], "de_key": "Nope"})
    code, lines = mc_check(live_server.url)
    assert code == 1
    assert any(
        line.startswith("FAIL  data extension (B): no data extension") and "MC_BU_B_DE_KEY" in line for line in lines
    )
    assert any(line.startswith("OK    data extension (A): 'Individual'") for line in lines)
    # The activity's page (one endpoint for every unit's package) names each unit's data extension.
    page = requests.get(f"{live_server.url}/api/v1/marketing-cloud/journey/index.html", timeout=5).text
    assert f"A (MID {MID_A}): <code>Individual</code>" in page and f"B (MID {MID_B}): <code>Nope</code>" in page
    # The steward sees each callback's unit.
    listing = admin_client.get("/admin/marketing_cloud/enscallback/").content.decode()
    assert f"B (MID {MID_B})" in listing and f"A (MID {MID_A})" in listing


@pytest.mark.django_db(transaction=True)
def test_every_marketing_cloud_admin_page_renders_with_two_units(journey, two_units, admin_client):
    assert journey.execute(subscriber("SK-B1"), secret=SECRET_B).status_code == 200
    run_queued()
    read_statuses_task()
    poll_data_extension()
    EnsCallback.objects.create(callback_id="cb-b", name="hub", business_unit=MID_B, signature_key="k")
    EnsCallback.objects.create(callback_id="cb-gone", name="hub", business_unit="999999", signature_key="k2")
    for model in apps.get_app_config("marketing_cloud").get_models():
        base = f"/admin/marketing_cloud/{model._meta.model_name}/"
        assert admin_client.get(base).status_code == 200, base
        assert admin_client.get(base, {"business_unit": MID_B}).status_code in (200, 302), base
        first = model.objects.order_by("pk").first()
        if first is not None:
            assert admin_client.get(f"{base}{first.pk}/change/").status_code == 200, base
    callbacks = admin_client.get("/admin/marketing_cloud/enscallback/").content.decode()
    assert "MID 999999 (not configured)" in callbacks
    assert admin_client.get("/admin/dashboard/").status_code == 200
