"""import_subscribers reads Marketing Cloud's own exports and extracts, --map, and dates in the tenant's time.

The fixture files (tests/fixtures/marketing_cloud/exports/, sources in its README) are in the
column layout of real exports; everything goes through the real import path and engine.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from customers.models import CrossReference, Individual
from integrations.marketing_cloud.backfill import import_subscribers
from integrations.marketing_cloud.models import ImportJob

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures" / "marketing_cloud" / "exports"
UTC = dt.UTC
# Marketing Cloud system time, stated here apart from the code under test: UTC-6, all year.
CST = dt.timezone(dt.timedelta(hours=-6))


def fixture(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copy(FIXTURES / name, tmp_path / name))


def xref(key: str) -> CrossReference:
    return CrossReference.objects.select_related("individual").get(external_id=key)


def command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_subscribers", *args, "--workers", "1", "--quiet", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_a_tracking_extract_is_read_with_its_own_column_names_and_dates_in_cst(tmp_path, sandbox):
    job = import_subscribers(fixture(tmp_path, "tracking_extract_subscribers.csv"))
    assert (job.rows_done, job.created, job.rejected) == (4, 3, 1)
    assert [(e["line"], e["field"]) for e in job.errors] == [(5, "EmailAddress")]
    active = xref("TX-0001")
    assert active.system_record_id == "100001" and active.source_status == "Active"
    # 6/23/2024 9:05:00 PM is Marketing Cloud time: 03:05 UTC the next day, not 21:05 UTC.
    assert active.source_modified_at == dt.datetime(2024, 6, 23, 21, 5, tzinfo=CST)
    assert active.individual.do_not_market_since is None
    unsubscribed = xref("TX-0002")
    assert unsubscribed.source_status == "Unsubscribed"
    assert unsubscribed.individual.do_not_market_since == dt.datetime(2026, 11, 30, 23, 30, tzinfo=CST)
    assert unsubscribed.source_modified_at == dt.datetime(2026, 11, 30, 23, 30, tzinfo=CST)  # its latest date
    held = xref("TX-0003")
    assert held.individual.do_not_market_since == dt.datetime(2025, 3, 2, 6, 0, tzinfo=CST)


def test_a_data_view_export_reads_iso_dates_without_offset_in_cst_and_ignores_its_other_columns(tmp_path, sandbox):
    out, err = command(str(fixture(tmp_path, "data_view_subscribers.csv")))
    assert "columns ignored: DateUndeliverable, Domain, BounceCount, SubscriberType, Locale" in err
    assert "3 golden records created" in out
    joined = xref("DV-0001")
    assert joined.system_record_id == "200001" and joined.source_status == "Active"
    assert joined.source_modified_at == dt.datetime(2024, 6, 24, 3, 5, tzinfo=UTC)
    assert xref("DV-0002").individual.do_not_market_since == dt.datetime(2026, 12, 1, 5, 30, tzinfo=UTC)
    assert xref("DV-0003").source_status == "Bounced" and xref("DV-0003").individual.do_not_market_since is None


def test_an_email_studio_export_with_display_names(tmp_path, sandbox):
    job = import_subscribers(fixture(tmp_path, "email_studio_export.csv"))
    assert (job.created, job.rejected) == (2, 0)
    assert (
        xref("ES-0001").individual.contact_points.get(kind="ContactPointEmail").email_address
        == "kofi.mensah@example.com"
    )
    assert xref("ES-0002").individual.do_not_market_since == dt.datetime(2026, 11, 30, 23, 30, tzinfo=CST)


def test_another_time_zone_can_be_named_for_an_export_made_in_a_users_zone(tmp_path, sandbox):
    command(str(fixture(tmp_path, "data_view_subscribers.csv")), "--time-zone", "America/New_York")
    # 2024-06-23 21:05 in New York (EDT, UTC-4) is 01:05 UTC.
    assert xref("DV-0001").source_modified_at == dt.datetime(2024, 6, 24, 1, 5, tzinfo=UTC)


def test_map_reads_any_other_header(tmp_path, sandbox):
    path = fixture(tmp_path, "crm_extract_other_headers.csv")
    out, err = command(
        str(path),
        *("--map", "CustomerNo=SubscriberKey", "--map", "E-Mail=EmailAddress"),
        *("--map", "Vorname=FirstName", "--map", "nachname=lastname", "--map", "Angelegt=CreatedDate"),
    )
    assert "column 'CustomerNo' read as SubscriberKey" in err and "column 'Nachname' read as LastName" in err
    assert "2 golden records created" in out
    weber = xref("CRM-0001")
    assert (weber.individual.first_name, weber.individual.last_name) == ("Jonas", "Weber")
    assert weber.source_modified_at == dt.datetime(2024, 6, 23, 21, 5, tzinfo=CST)


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (["Nope=SubscriberKey"], "the file has no column 'Nope'"),
        (["CustomerNo=SubscriberKey", "E-Mail=Mailbox"], "'Mailbox' is no column the import knows"),
        (["CustomerNo"], "write it as OLD=NEW"),
        (["CustomerNo=SubscriberKey", "customerno=EmailAddress"], "names the column 'customerno' twice"),
        (["CustomerNo=SubscriberKey", "E-Mail=SubscriberKey"], "'CustomerNo' and 'E-Mail' both give SubscriberKey"),
        (["CustomerNo=SubscriberKey"], "lacks required column(s): EmailAddress"),
    ],
)
def test_unknown_or_conflicting_headers_are_refused_naming_the_column(tmp_path, sandbox, maps, message):
    path = fixture(tmp_path, "crm_extract_other_headers.csv")
    with pytest.raises(CommandError) as refused:
        command(str(path), *(arg for pair in maps for arg in ("--map", pair)))
    assert message in str(refused.value)
    assert not CrossReference.objects.exists()


def test_two_columns_giving_one_field_are_refused_and_one_can_be_ignored(tmp_path, sandbox):
    path = tmp_path / "both.csv"
    path.write_text(
        "SubscriberKey,EmailAddress,DateCreated,DateJoined\nBOTH-1,both@example.com,6/23/2024 9:05:00 PM,1/1/2020\n"
    )
    with pytest.raises(CommandError, match="'DateCreated' and 'DateJoined' both give CreatedDate"):
        command(str(path))
    out, _ = command(str(path), "--map", "DateJoined=")
    assert "1 golden records created" in out
    assert xref("BOTH-1").source_modified_at == dt.datetime(2024, 6, 23, 21, 5, tzinfo=CST)


def test_a_bad_time_zone_is_refused_by_name(tmp_path, sandbox):
    with pytest.raises(CommandError, match="--time-zone 'Mars/Olympus' is no IANA time zone"):
        command(str(fixture(tmp_path, "email_studio_export.csv")), "--time-zone", "Mars/Olympus")
    assert not Individual.objects.exists()


def test_the_import_job_in_the_admin_shows_how_the_columns_and_dates_were_read(tmp_path, sandbox, admin_client):
    import_subscribers(fixture(tmp_path, "data_view_subscribers.csv"))
    job = ImportJob.objects.get()
    assert job.columns["DateJoined"] == "CreatedDate" and job.columns["Domain"] == ""
    assert job.columns["DateUnsubscribed"] == "UnsubscribedDate"
    html = admin_client.get(reverse("admin:marketing_cloud_importjob_change", args=[job.pk])).content.decode()
    assert "DateJoined" in html and "CreatedDate" in html
    assert "Marketing Cloud system time (UTC-06:00, no daylight saving)" in html
