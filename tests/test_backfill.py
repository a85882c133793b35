"""Backfill from a subscriber export: same rules, batches, bad rows by line, resumable, write-backs queued."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from customers.cim import CimValidationError
from customers.models import ContactPoint, CrossReference, HistoryEntry, Individual, MatchCandidate
from integrations.marketing_cloud.backfill import (
    _GROWING,
    _READ_WHILE_GROWING,
    LOCK_TABLE_SHARE,
    LOCKS_PER_ROW,
    MIN_BATCH,
    BatchPlan,
    _batches,
    _change,
    _Statistics,
    fit_batches,
    import_subscribers,
    lock_table_size,
    read_columns,
)
from integrations.marketing_cloud.exports import tenant_zone
from integrations.marketing_cloud.models import ImportJob
from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db  # rolled back; the tests that need commits say so

HEADER = [
    "SubscriberKey",
    "EmailAddress",
    "FirstName",
    "LastName",
    "BirthDate",
    "MobileNumber",
    "City",
    "Country",
    "Status",
    "ModifiedDate",
]


def write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for row in rows:
            writer.writerow([row.get(c, "") for c in HEADER])
    return path


def people(n, start=0):
    return [
        {
            "SubscriberKey": f"IMP-{i:05d}",
            "EmailAddress": f"imp{i}@example.com",
            "FirstName": "Imp",
            "LastName": f"Person{i}",
            "BirthDate": "1990-01-31",
            "MobileNumber": f"+4477009{i:05d}",
            "City": "Leeds",
            "Country": "GB",
            "Status": "Active",
            "ModifiedDate": "2026-11-01T00:00:00Z",
        }
        for i in range(start, start + n)
    ]


def test_import_applies_the_rules_reports_bad_rows_and_queues_write_backs(tmp_path, sandbox):
    rows = people(25)
    rows[4]["EmailAddress"] = "broken"  # line 6
    rows[9]["BirthDate"] = "1990-02-31"  # line 11
    rows[12]["EmailAddress"] = "IMP3@example.com"  # same person as row 3 (line 5)
    rows.append(dict(rows[0], FirstName="Later", ModifiedDate="2026-11-02T00:00:00Z", SubscriberKey="IMP-00000"))
    path = write_csv(tmp_path / "export.csv", rows)
    job = import_subscribers(path, batch_size=10)
    assert job.status == "completed" and job.rows_done == 26
    assert job.rejected == 2
    assert [(e["line"], e["field"]) for e in job.errors] == [(6, "EmailAddress"), (11, "BirthDate")]
    assert (tmp_path / "export.csv.errors.csv").read_text().startswith("6,EmailAddress,")
    # 24 good rows, one a later change of row 0 and one the same email as row 3.
    assert CrossReference.objects.count() == 23
    assert Individual.objects.count() == 22
    assert Individual.objects.get(cross_references__external_id="IMP-00000").first_name == "Later"
    assert (
        CrossReference.objects.get(external_id="IMP-00012").individual_id
        == CrossReference.objects.get(external_id="IMP-00003").individual_id
    )
    assert ContactPoint.objects.filter(kind="ContactPointPhone").count() == 23
    assert HistoryEntry.objects.filter(action="create").count() == 22
    assert set(CrossReference.objects.values_list("writeback_state", flat=True)) == {"pending"}

    run_queued()
    rows_in_mc = sandbox.rows("Individual")
    for xref in CrossReference.objects.select_related("individual"):
        assert rows_in_mc[xref.external_id]["GlobalPartyId"] == xref.individual.master_id
    assert sandbox.count("POST", "/hub/v1/dataevents/key:Individual/rowset") == 1  # 23 rows, one call


@pytest.mark.django_db(transaction=True)  # live server: its thread sees committed rows only
def test_import_matches_records_the_hub_already_has(tmp_path, journey, sandbox):
    journey.execute(subscriber(key="IMP-00001", email="imp1@example.com", ModifiedDate="2026-10-01T00:00:00Z"))
    # The same mailbox, name and birth date: the export's IMP-00002 is this person.
    journey.execute(
        subscriber(
            key="OTHER-KEY", email="imp2@example.com", FirstName="Imp", LastName="Person2", BirthDate="1990-01-31"
        )
    )
    # The same mailbox and name, another birth date: the full rules send the pair to review.
    journey.execute(
        subscriber(
            key="NAMESAKE", email="imp0@example.com", FirstName="Imp", LastName="Person0", BirthDate="1950-05-05"
        )
    )
    run_queued()
    master_1 = Individual.objects.get(cross_references__external_id="IMP-00001").master_id
    job = import_subscribers(write_csv(tmp_path / "e.csv", people(3)), batch_size=100)
    assert job.created == 1 and job.matched == 2
    assert Individual.objects.count() == 4
    assert Individual.objects.get(cross_references__external_id="IMP-00001").master_id == master_1
    assert CrossReference.objects.get(external_id="IMP-00002").individual.cross_references.count() == 2
    owner = dict(CrossReference.objects.values_list("external_id", "individual_id"))
    pairs = set(MatchCandidate.objects.filter(status="open").values_list("left_id", "right_id"))
    assert job.suspects_queued == len(pairs)
    assert tuple(sorted((owner["NAMESAKE"], owner["IMP-00000"]))) in pairs


@pytest.mark.django_db(transaction=True)  # live server: its thread sees committed rows only
def test_older_rows_do_not_overwrite_newer_changes(tmp_path, journey, sandbox):
    journey.execute(
        subscriber(key="IMP-00000", email="imp0@example.com", FirstName="Newest", ModifiedDate="2026-11-20T00:00:00Z")
    )
    run_queued()
    job = import_subscribers(write_csv(tmp_path / "e.csv", people(1)))
    assert job.superseded == 1
    assert Individual.objects.get().first_name == "Newest"


def test_an_interrupted_import_resumes_after_its_last_committed_batch(tmp_path, sandbox):
    path = write_csv(tmp_path / "big.csv", people(50))
    first = import_subscribers(path, batch_size=20, stop_after_batches=1)
    assert first.status == "interrupted" and first.rows_done == 20
    assert CrossReference.objects.count() == 20
    resumed = import_subscribers(path, batch_size=20)
    assert resumed.pk == first.pk and resumed.status == "completed" and resumed.rows_done == 50
    assert CrossReference.objects.count() == 50 and Individual.objects.count() == 50
    with pytest.raises(Exception, match="imported completely before"):
        import_subscribers(path)


@pytest.mark.django_db(transaction=True)  # the command forks worker processes
def test_command_output_and_refusals(tmp_path, sandbox):
    path = write_csv(tmp_path / "e.csv", people(3))
    out, err = io.StringIO(), io.StringIO()
    call_command("import_subscribers", str(path), stdout=out, stderr=err)
    assert "3 golden records created" in out.getvalue() and "rows/s" in err.getvalue()
    missing = tmp_path / "bad.csv"
    missing.write_text("Email,Name\nx@example.com,X\n")
    with pytest.raises(CommandError, match="SubscriberKey"):
        call_command("import_subscribers", str(missing))
    assert ImportJob.objects.count() == 1  # a refused file starts no job


def test_batches_and_workers_are_cut_to_what_the_lock_table_holds():
    # The defaults: 64 locks x 100 connections; an import's batches hold at most half at once.
    table = 6400
    share = int(table * LOCK_TABLE_SHARE)
    two = fit_batches(400, 2, table)
    assert (two.rows, two.workers) == (share // (2 * LOCKS_PER_ROW), 2) and "lock table holds 6,400" in two.note
    assert fit_batches(400, 1, table).rows == share // LOCKS_PER_ROW
    many = fit_batches(400, 16, table)  # rows no fewer than MIN_BATCH, then fewer workers
    assert many.rows == MIN_BATCH and many.workers == share // (MIN_BATCH * LOCKS_PER_ROW) < 16
    assert fit_batches(100, 2, table) == BatchPlan(100, 2)  # fits: as asked, no note
    resumed = fit_batches(400, 3, table, resumed=True)  # its batches are numbered by their size: keep it
    assert (resumed.rows, resumed.workers) == (400, 1)
    for rows, workers in ((400, 2), (2000, 16), (1, 1), (50, 4)):
        plan = fit_batches(rows, workers, table)
        assert plan.workers == 1 or plan.rows * plan.workers * LOCKS_PER_ROW <= share


def test_a_rows_locks_are_what_the_batch_plan_assumes(tmp_path):
    """The engine's locks per row on the benchmark's own export; a new lock name per row fails here."""
    path = tmp_path / "export.csv"
    bench = Path(__file__).resolve().parent.parent / "bench" / "make_subscriber_export.py"
    subprocess.run([sys.executable, str(bench), "--rows", "2000", "--out", str(path)], check=True, capture_output=True)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader)
        per_batch = []
        for _, rows in _batches(reader, read_columns(path), 400, tenant_zone(None)):
            names = set()
            for _, args in rows:
                try:
                    names |= _change(args, "test").lock_names
                except CimValidationError:  # the export's deliberately bad rows
                    continue
            per_batch.append(len(names) / len(rows))
    assert len(per_batch) == 5 and max(per_batch) <= LOCKS_PER_ROW
    assert min(per_batch) > LOCKS_PER_ROW - 3  # and not so far under that batches are cut for nothing


def test_the_lock_table_size_is_read_from_the_server():
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_locks_per_transaction")
        per = int(cursor.fetchone()[0])
        cursor.execute("SHOW max_connections")
        conns = int(cursor.fetchone()[0])
    assert lock_table_size() >= per * conns > 0


@pytest.mark.django_db(transaction=True)  # the command forks worker processes
def test_the_command_says_when_it_cuts_batches_to_fit_the_lock_table(tmp_path, sandbox):
    path = write_csv(tmp_path / "e.csv", people(3))
    err = io.StringIO()
    call_command(
        "import_subscribers", str(path), "--workers", "16", "--batch-size", "2000", stderr=err, stdout=io.StringIO()
    )
    assert "instead of 2,000 in 16" in err.getvalue()
    job = ImportJob.objects.get()
    assert job.status == "completed" and job.rows_done == 3 and job.batch_size == MIN_BATCH


def test_statistics_refreshes_read_tables_while_importing_and_every_table_at_the_end():
    statistics = _Statistics()
    with CaptureQueriesContext(connection) as queries:
        statistics.imported(statistics.step - 1)  # not grown enough yet: nothing
        statistics.imported(statistics.step)
        statistics.imported(statistics.step + 10_000, finished=True)
    analyzed = [q["sql"].removeprefix("ANALYZE ").split(", ") for q in queries if q["sql"].startswith("ANALYZE")]
    assert analyzed == [list(_READ_WHILE_GROWING), list(_GROWING)]
    assert "customers_historyentry" not in analyzed[0] and "customers_historyentry" in analyzed[1]


def test_tables_skipped_while_importing_are_refreshed_even_when_the_end_comes_soon_after():
    statistics = _Statistics()
    with CaptureQueriesContext(connection) as queries:
        statistics.imported(statistics.step)
        statistics.imported(statistics.step + 1, finished=True)
    analyzed = [q["sql"].removeprefix("ANALYZE ").split(", ") for q in queries if q["sql"].startswith("ANALYZE")]
    assert analyzed == [list(_READ_WHILE_GROWING), ["customers_historyentry", "customers_changeevent"]]


@pytest.mark.django_db(transaction=True)  # VACUUM runs outside a transaction only
def test_outside_a_transaction_the_read_tables_are_vacuumed_so_key_lookups_read_only_the_index(tmp_path, sandbox):
    call_command("import_subscribers", str(write_csv(tmp_path / "e.csv", people(5))), "--workers", "1", "--quiet")
    with connection.cursor() as cursor:
        cursor.execute("SELECT relallvisible FROM pg_class WHERE relname = 'customers_matchkey'")
        assert cursor.fetchone()[0] == 0  # inserted, never vacuumed (too few rows for a refresh)
    statistics = _Statistics()
    with CaptureQueriesContext(connection) as queries:
        statistics.imported(statistics.step)
        statistics.imported(statistics.step + 10_000, finished=True)
    run = [q["sql"].split(" customers_")[0] for q in queries if q["sql"].startswith(("VACUUM", "ANALYZE"))]
    assert run == ["VACUUM (ANALYZE)", "VACUUM (ANALYZE)", "ANALYZE"]
    last = [q["sql"] for q in queries if q["sql"].startswith(("VACUUM", "ANALYZE"))][-1]
    assert last == "ANALYZE customers_historyentry, customers_changeevent"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT relallvisible FROM pg_class WHERE relname = 'customers_matchkey'")
        assert cursor.fetchone()[0] > 0
        # The blocking-key look-up is answered from the index, with no visit to the table.
        cursor.execute("SELECT kind, value FROM customers_matchkey LIMIT 1")
        kind, value = cursor.fetchone()
        cursor.execute("SET LOCAL enable_seqscan = off")  # a five-row table would be read whole
        cursor.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) "
            "SELECT individual_id FROM customers_matchkey WHERE kind = %s AND value = %s",
            [kind, value],
        )
        plan = cursor.fetchone()[0][0]["Plan"]
    assert plan["Node Type"] == "Index Only Scan" and plan["Heap Fetches"] == 0


def test_stored_documents_carry_no_planner_statistics():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, a.attname, a.attstattarget FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relname = ANY(%s) AND a.attname = ANY(%s)",
            [["customers_individual", "customers_crossreference"], ["lineage", "source_payload", "last_name"]],
        )
        targets = {(table, column): target for table, column, target in cursor.fetchall()}
    assert targets[("customers_individual", "lineage")] == 0
    assert targets[("customers_crossreference", "source_payload")] == 0
    assert targets[("customers_individual", "last_name")] != 0  # searched by: keeps its statistics
