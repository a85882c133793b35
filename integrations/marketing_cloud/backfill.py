"""Backfill from a Marketing Cloud subscriber export (CSV), through the same engine as events.

Every row goes through ``customers.resolution.engine.resolve``, the engine the journey
calls, the events API and the reconciliation poller go through: the full match rules
(fuzzy, nickname, phonetic), survivorship, suspects queued for review, history and
outbox rows. Streaming: rows are read, validated and applied a batch at a time, so
memory stays flat whatever the file's size. Each batch commits together with the
job's progress, so an interrupted import resumes after its last committed row. Bad
rows are reported with their line numbers (and written to ``FILE.errors.csv``) and
skipped; every write-back the import makes necessary is queued.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.db import connection, connections, reset_queries, transaction
from django.utils import timezone

from customers.cim import CimValidationError, parse_cim_datetime
from customers.resolution.engine import APPLIED, FAILED, SUPERSEDED, SourceChange, resolve
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud.exports import (
    DATE_COLUMNS,
    HELD_DATE,
    UNSUBSCRIBED_DATE,
    ColumnError,
    ColumnPlan,
    describe_zone,
    in_tenant_time,
    plan_columns,
    tenant_zone,
)
from integrations.marketing_cloud.mapping import NOT_MARKETABLE, subscriber_to_source
from integrations.marketing_cloud.models import ImportJob
from integrations.marketing_cloud.writeback import queue_flush

# Rows per transaction, at most: fewer when the batches' locks would not fit (see fit_batches).
DEFAULT_BATCH = 400
MAX_STORED_ERRORS = 1000
# A row holds advisory locks until its batch commits: its cross reference, its master IDs and
# its identity blocking keys, 10.8 a row on bench/make_subscriber_export.py's export (rounded up).
LOCKS_PER_ROW = 12
# The batches in flight together hold at most half of PostgreSQL's shared lock table, which
# every session shares: past its size a lock fails with "out of shared memory", in whichever
# session asks for it (the live resolver's, as well as the import's).
LOCK_TABLE_SHARE = 0.5
# Batches are not cut below this: each costs 30-50 statements (bench/statements.py: 31 for one row, 51 for 100).
MIN_BATCH = 50


class ImportRefused(Exception):
    pass


def fingerprint(path: Path) -> tuple[str, int]:
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(1024 * 1024)
    return f"{size}:{hashlib.sha256(head).hexdigest()[:32]}", size


class _CountingReader(io.RawIOBase):
    """Counts bytes read, for a progress bar measured in bytes of the file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        return n


@dataclass
class BadRow:
    line: int
    field: str
    message: str


def read_columns(path: Path, column_map: dict[str, str] | None = None) -> ColumnPlan:
    """What the file's header means (``exports.plan_columns``); ImportRefused names what cannot be read."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ImportRefused("the file is empty")
    try:
        return plan_columns(header, column_map)
    except ColumnError as exc:
        raise ImportRefused(str(exc)) from None


def _batches(
    reader: Any, plan: ColumnPlan, size: int, zone: dt.tzinfo
) -> Iterator[tuple[int, list[tuple[int, dict[str, str]]]]]:
    """The file's data rows in numbered batches of ``size``: (number, [(line, in-arguments), ...]).

    Dates are turned to ISO 8601 with their offset here, read in the tenant's time when they name none.
    """
    columns = plan.targets
    batch: list[tuple[int, dict[str, str]]] = []
    number = 0
    for values in reader:
        args = {c: v for c, v in zip(columns, values, strict=False) if c and v != ""}
        for name in DATE_COLUMNS.intersection(args):
            args[name] = in_tenant_time(args[name], zone)
        # reader.line_num is the physical line (quoted fields may span lines).
        batch.append((reader.line_num, args))
        if len(batch) >= size:
            yield number, batch
            number, batch = number + 1, []
    if batch:
        yield number, batch


def _status_date(args: dict[str, str], status: str) -> dt.datetime | None:
    """When an export says the status began: DateUnsubscribed or DateHeld (refused if no date)."""
    name = {"Unsubscribed": UNSUBSCRIBED_DATE, "Held": HELD_DATE}.get(status)
    if name is None or not args.get(name):
        return None
    label = {UNSUBSCRIBED_DATE: "DateUnsubscribed", HELD_DATE: "DateHeld"}[name]
    return parse_cim_datetime(args[name], f"row.{label}")


def _change(args: dict[str, str], actor: str) -> SourceChange:
    status_since: list[dt.datetime | None] = []

    def with_status_date(cim: dict[str, Any]) -> None:
        since = _status_date(args, cim.get("subscriberStatus") or "")
        if since is not None and cim.get("subscriberStatus") in NOT_MARKETABLE:
            cim["doNotMarketFromUpdateDate"] = since.isoformat()
        status_since.append(since)

    # Parsed once: the mapping's check is the parse the engine uses.
    cim, source = subscriber_to_source(args, prefix="row", amend=with_status_date)
    [since] = status_since
    modified = cim["auditInfo"].get("updatedDate")
    if not modified:
        # An export has no modified date: its latest date is when the row last changed.
        dates = [d for d in (since, parse_cim_datetime(cim["auditInfo"].get("createdDate"), "row.CreatedDate")) if d]
        modified = max(dates).isoformat() if dates else None
    return SourceChange(
        system=MARKETING_CLOUD,
        external_id=args["SubscriberKey"],
        source=source,
        modified_at=parse_cim_datetime(modified, "row.ModifiedDate") if modified else None,
        source_status=cim.get("subscriberStatus") or "",
        actor=actor,
    )


@dataclass
class BatchDone:
    number: int
    rows: int
    bad: list[BadRow]


def apply_batch(job_id: int, number: int, rows: list[tuple[int, dict[str, str]]], writeback: bool) -> BatchDone:
    """Validate one batch, apply it through the engine, and record it done with the job's counts: one transaction.

    Runs in the importing process or in one of its workers (several batches at once, each its
    own transaction, as concurrent events are).
    """
    actor = f"import:{job_id}"
    changes: list[SourceChange] = []
    lines: list[int] = []
    bad: list[BadRow] = []
    for line, args in rows:
        try:
            changes.append(_change(args, actor))
            lines.append(line)
        except CimValidationError as exc:
            bad.append(BadRow(line, exc.field.replace("row.", ""), exc.message))
    systems = frozenset({MARKETING_CLOUD}) if writeback else frozenset()
    with transaction.atomic():
        resolutions = resolve(changes, writeback_systems=systems, render_snapshots=False)
        for line, resolution in zip(lines, resolutions, strict=True):
            if resolution.status == FAILED:
                bad.append(BadRow(line, "row", f"could not be applied: {type(resolution.error).__name__}"))
        bad.sort(key=lambda b: b.line)
        applied = [r for r in resolutions if r.status == APPLIED]
        writebacks = sum(1 for r in applied if r.writeback == "queued")
        # The counts add up in the database, so batches committing in any order leave them right.
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {ImportJob._meta.db_table} SET rows_done = rows_done + %s, created = created + %s, "
                "matched = matched + %s, superseded = superseded + %s, suspects_queued = suspects_queued + %s, "
                "rejected = rejected + %s, writebacks_queued = writebacks_queued + %s, "
                "batches_done = array_append(batches_done, %s), "
                "errors = CASE WHEN jsonb_array_length(errors) < %s THEN errors || %s::jsonb ELSE errors END, "
                "updated_at = now() WHERE id = %s",
                [
                    len(rows),
                    sum(1 for r in applied if r.created),
                    sum(1 for r in applied if not r.created),
                    sum(1 for r in resolutions if r.status == SUPERSEDED),
                    sum(len(r.queued_candidates) for r in applied),
                    len(bad),
                    writebacks,
                    number,
                    MAX_STORED_ERRORS,
                    json.dumps([b.__dict__ for b in bad[:MAX_STORED_ERRORS]]),
                    job_id,
                ],
            )
        if writebacks:
            queue_flush()
    # With DEBUG on, Django keeps every statement's SQL; a batch's carry thousands of values.
    reset_queries()
    return BatchDone(number, len(rows), bad)


# Tables a backfill grows fast and reads while it runs: their planner statistics are refreshed as
# they grow (see _Statistics).
_READ_WHILE_GROWING = (
    "customers_individual",
    "customers_crossreference",
    "customers_contactpoint",
    "customers_matchkey",
    "customers_matchcandidate",
)
# Written and never read by the import: refreshed once, when it ends.
_WRITTEN_ONLY = ("customers_historyentry", "customers_changeevent")
_GROWING = (*_READ_WHILE_GROWING, *_WRITTEN_ONLY)


class _Statistics:
    """Refreshes the planner's statistics of the tables an import fills, as they grow.

    Autovacuum analyses a table once enough of it changed, but during a large import the
    tables grow tenfold between its visits; with statistics of a small table the planner
    reads a large one whole to find a few hundred rows by foreign key. Each refresh is
    sampled (a second or two however large the tables), and comes when this import has
    added as many golden records as the hub held at the last one (at least 10,000). While the
    import runs, only the tables it reads are refreshed; at its end, every table it filled.

    The tables the import reads are vacuumed as well (``VACUUM (ANALYZE)``, outside any
    transaction): only VACUUM marks pages all-visible, and until it does, every blocking key
    a look-up finds costs a visit to the key table's heap besides its index, and every new
    row read the first time dirties its page (hint bits). Autovacuum may be off or behind
    during an import (it is off on the CI machine); a vacuum of freshly inserted pages
    reads each once and skips the pages marked before.
    """

    def __init__(self) -> None:
        self.rows_at_last = 0
        self.written_only_behind = False
        self.step = max(10_000, self._golden_records())

    @staticmethod
    def _golden_records() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [_GROWING[0]])
            row = cursor.fetchone()
        return max(int(row[0]) if row else 0, 0)

    def imported(self, rows_done: int, *, finished: bool = False) -> None:
        added = rows_done - self.rows_at_last
        if added >= self.step or (finished and added >= min(self.step, 10_000)):
            tables = _GROWING if finished else _READ_WHILE_GROWING
            self.written_only_behind = not finished
        elif finished and self.written_only_behind:
            tables = _WRITTEN_ONLY  # the read tables were refreshed just before the end
        else:
            return
        # VACUUM cannot run in a transaction (a caller's, or a test's): there, ANALYZE alone.
        vacuumed = () if connection.in_atomic_block else tuple(t for t in tables if t in _READ_WHILE_GROWING)
        analysed = tuple(t for t in tables if t not in vacuumed)
        with connection.cursor() as cursor:
            if vacuumed:
                cursor.execute(f"VACUUM (ANALYZE) {', '.join(vacuumed)}")
            if analysed:
                cursor.execute(f"ANALYZE {', '.join(analysed)}")
        if tables is not _WRITTEN_ONLY:
            self.rows_at_last = rows_done
            self.step = max(10_000, self._golden_records())
        if finished:
            self.written_only_behind = False


def lock_table_size() -> int:
    """The locks PostgreSQL's shared lock table is sized for, all sessions together.

    ``max_locks_per_transaction`` x (``max_connections`` + ``max_prepared_transactions``): 6,400
    with the defaults. The server rounds its shared memory up, so a little more may fit; this is
    what it promises.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_locks_per_transaction')::int * (current_setting('max_connections')::int "
            "+ current_setting('max_prepared_transactions')::int)"
        )
        (size,) = cursor.fetchone()
    return int(size)


@dataclass(frozen=True)
class BatchPlan:
    rows: int
    workers: int
    note: str = ""


def fit_batches(rows: int, workers: int, table_size: int, *, resumed: bool = False) -> BatchPlan:
    """Rows per batch and workers whose batches' locks, all in flight at once, fit the import's share.

    The rows are cut first (to no fewer than MIN_BATCH), then the workers. A resumed import keeps
    the batch size it started with (its committed batches are numbered by it), so only its
    workers are cut. One worker always runs, whatever its batch needs.
    """
    share = int(table_size * LOCK_TABLE_SHARE)
    fitted_rows = rows if resumed else min(rows, max(MIN_BATCH, share // (workers * LOCKS_PER_ROW)))
    fitted_workers = max(1, min(workers, share // (fitted_rows * LOCKS_PER_ROW)))
    if (fitted_rows, fitted_workers) == (rows, workers):
        return BatchPlan(rows, workers)
    note = (
        f"batches of {fitted_rows:,} rows in {fitted_workers} worker(s) instead of {rows:,} in {workers}: "
        f"a row holds about {LOCKS_PER_ROW} locks until its batch commits, and the server's lock table holds "
        f"{table_size:,} for all sessions (max_locks_per_transaction x max_connections), of which an import "
        f"takes at most {LOCK_TABLE_SHARE:.0%}"
    )
    return BatchPlan(fitted_rows, fitted_workers, note)


def _worker_ready() -> None:
    """A worker process starts with no database connection of its own yet (the parent closed its before)."""
    connections.close_all()


def import_subscribers(
    path: Path,
    *,
    column_map: dict[str, str] | None = None,
    time_zone: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    workers: int = 1,
    restart: bool = False,
    writeback: bool = True,
    progress: Callable[[ImportJob, float, float], None] | None = None,
    stop_after_batches: int | None = None,
    notice: Callable[[str], None] | None = None,
) -> ImportJob:
    """Import (or resume importing) ``path``; returns the job with its counts.

    With ``workers`` above 1, that many processes apply batches side by side (each batch is
    still one transaction); at most two batches per worker are read ahead, so memory stays
    flat. A resumed job skips the batches it committed before (numbered by the batch size
    it started with). ``column_map`` reads other headers as the hub's columns (``--map``);
    ``time_zone`` is the zone of dates without an offset (default Marketing Cloud system time).
    Batches and workers are cut to what the server's lock table holds (``fit_batches``); ``notice``
    hears it when they are.
    """
    plan = read_columns(path, column_map)
    try:
        zone = tenant_zone(time_zone)
    except ColumnError as exc:
        raise ImportRefused(str(exc)) from None
    print_, size = fingerprint(path)
    job = ImportJob.objects.filter(fingerprint=print_).exclude(status=ImportJob.COMPLETED).first()
    resumed = job is not None and not restart and bool(job.batch_size)
    asked = job.batch_size if resumed else batch_size
    plan_of_batches = fit_batches(asked, workers, lock_table_size(), resumed=resumed)
    if plan_of_batches.note and notice:
        notice(plan_of_batches.note)
    workers = plan_of_batches.workers
    if job is None or restart:
        if not restart and ImportJob.objects.filter(fingerprint=print_, status=ImportJob.COMPLETED).exists():
            raise ImportRefused(f"{path.name} was imported completely before; use --restart to import it again.")
        job = ImportJob.objects.create(
            file_name=str(path), fingerprint=print_, file_size=size, batch_size=plan_of_batches.rows
        )
    job.status = ImportJob.RUNNING
    # How the header was read and the zone of dates without offset, for the steward (this run's).
    job.columns = plan.described()
    job.time_zone = describe_zone(zone)
    job.save(update_fields=["status", "columns", "time_zone", "updated_at"])
    done_before = set(job.batches_done)
    statistics = _Statistics()
    errors_path = path.with_name(path.name + ".errors.csv")
    started = time.monotonic()
    applied = 0
    pool = None
    if workers > 1:
        connections.close_all()  # no connection may be shared with the workers
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_ready)
    try:
        with path.open("rb") as raw_file, errors_path.open("a", newline="", encoding="utf-8") as errors_file:
            counter = _CountingReader(raw_file)
            text = io.TextIOWrapper(io.BufferedReader(counter, 1 << 20), encoding="utf-8-sig", newline="")
            reader = csv.reader(text)
            next(reader)  # the header, read above
            errors_out = csv.writer(errors_file)
            in_flight: deque[Any] = deque()

            def finished(done: BatchDone) -> bool:
                """Report a committed batch; True when the import is to stop here."""
                nonlocal applied
                for row in done.bad:
                    errors_out.writerow([row.line, row.field, row.message])
                applied += 1
                statistics.imported(ImportJob.objects.values_list("rows_done", flat=True).get(pk=job.pk))
                if progress:
                    job.refresh_from_db()
                    progress(job, counter.count / max(size, 1), time.monotonic() - started)
                return stop_after_batches is not None and applied >= stop_after_batches

            stop = False
            for number, rows in _batches(reader, plan, plan_of_batches.rows, zone):
                if number in done_before:
                    continue
                if pool is None:
                    stop = finished(apply_batch(job.pk, number, rows, writeback))
                else:
                    in_flight.append(pool.apply_async(apply_batch, (job.pk, number, rows, writeback)))
                    while len(in_flight) >= 2 * workers or (in_flight and in_flight[0].ready()):
                        stop = finished(in_flight.popleft().get()) or stop
                if stop:
                    break
            while in_flight:
                finished(in_flight.popleft().get())
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    job.refresh_from_db()
    statistics.imported(job.rows_done, finished=True)
    if stop:
        job.status = ImportJob.INTERRUPTED
        job.save(update_fields=["status", "updated_at"])
        return job
    job.status = ImportJob.COMPLETED
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at", "updated_at"])
    if os.path.exists(errors_path) and os.path.getsize(errors_path) == 0:
        os.remove(errors_path)
    return job


def print_progress(job: ImportJob, fraction: float, elapsed: float, stream: IO[str] = sys.stderr) -> None:
    width = 30
    filled = int(width * min(fraction, 1.0))
    rate = job.rows_done / elapsed if elapsed > 0 else 0.0
    eta = (elapsed / fraction - elapsed) if fraction > 0 else 0.0
    stream.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%}  {job.rows_done:,} rows  "
        f"{rate:,.0f} rows/s  ETA {eta:,.0f}s  bad {job.rejected:,}   "
    )
    stream.flush()
