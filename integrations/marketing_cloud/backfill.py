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
import hashlib
import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.db import reset_queries, transaction
from django.utils import timezone

from customers.cim import CimValidationError, parse_cim_datetime, parse_individual
from customers.resolution.engine import APPLIED, FAILED, SUPERSEDED, SourceChange, resolve
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud.mapping import IN_ARGUMENTS, subscriber_to_cim
from integrations.marketing_cloud.models import ImportJob
from integrations.marketing_cloud.writeback import queue_flush

REQUIRED_COLUMNS = ("SubscriberKey", "EmailAddress")
# Rows per transaction. Each row takes about seven advisory locks (its record, master ID and
# blocking keys); PostgreSQL's default lock table (max_locks_per_transaction 64 x 100 connections)
# holds 6,400 for all sessions together, so a batch stays well under half of it.
DEFAULT_BATCH = 400
MAX_STORED_ERRORS = 1000
_CANONICAL = {name.lower(): name for name in IN_ARGUMENTS}


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


def _rows(reader: csv.reader, header: list[str], skip: int) -> Iterator[tuple[int, dict[str, str]]]:
    columns = [_CANONICAL.get(name.strip().lower()) for name in header]
    for index, values in enumerate(reader):
        if index < skip:
            continue
        # reader.line_num is the physical line (quoted fields may span lines).
        yield reader.line_num, {c: v for c, v in zip(columns, values, strict=False) if c and v != ""}


def _change(args: dict[str, str], actor: str) -> SourceChange:
    cim = subscriber_to_cim(args, prefix="row")
    source = parse_individual(cim, "row")
    modified = cim["auditInfo"].get("updatedDate") or cim["auditInfo"].get("createdDate")
    return SourceChange(
        system=MARKETING_CLOUD,
        external_id=args["SubscriberKey"],
        source=source,
        modified_at=parse_cim_datetime(modified, "row.ModifiedDate") if modified else None,
        source_status=cim.get("subscriberStatus") or "",
        actor=actor,
    )


def _check_header(path: Path) -> None:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ImportRefused("the file is empty")
    present = {name.strip().lower() for name in header}
    missing = [c for c in REQUIRED_COLUMNS if c.lower() not in present]
    if missing:
        raise ImportRefused(f"the header lacks required column(s): {', '.join(missing)}")


def import_subscribers(
    path: Path,
    *,
    batch_size: int = DEFAULT_BATCH,
    restart: bool = False,
    writeback: bool = True,
    progress: Callable[[ImportJob, float, float], None] | None = None,
    stop_after_batches: int | None = None,
) -> ImportJob:
    """Import (or resume importing) ``path``; returns the job with its counts."""
    _check_header(path)
    print_, size = fingerprint(path)
    job = ImportJob.objects.filter(fingerprint=print_).exclude(status=ImportJob.COMPLETED).first()
    if job is None or restart:
        if not restart and ImportJob.objects.filter(fingerprint=print_, status=ImportJob.COMPLETED).exists():
            raise ImportRefused(f"{path.name} was imported completely before; use --restart to import it again.")
        job = ImportJob.objects.create(file_name=str(path), fingerprint=print_, file_size=size)
    else:
        job.status = ImportJob.RUNNING
        job.save(update_fields=["status", "updated_at"])
    errors_path = path.with_name(path.name + ".errors.csv")
    started = time.monotonic()
    batches = 0
    with path.open("rb") as raw_file:
        counter = _CountingReader(raw_file)
        text = io.TextIOWrapper(io.BufferedReader(counter, 1 << 20), encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        header = next(reader)
        rows = _rows(reader, header, job.rows_done)
        actor = f"import:{job.pk}"
        with errors_path.open("a", newline="", encoding="utf-8") as errors_file:
            errors_out = csv.writer(errors_file)
            systems = frozenset({MARKETING_CLOUD}) if writeback else frozenset()
            while True:
                changes: list[SourceChange] = []
                lines: list[int] = []
                bad: list[BadRow] = []
                taken = 0
                for line, args in rows:
                    taken += 1
                    try:
                        changes.append(_change(args, actor))
                        lines.append(line)
                    except CimValidationError as exc:
                        bad.append(BadRow(line, exc.field.replace("row.", ""), exc.message))
                    if taken >= batch_size:
                        break
                if taken == 0:
                    break
                with transaction.atomic():
                    resolutions = resolve(changes, writeback_systems=systems, render_snapshots=False)
                    for line, resolution in zip(lines, resolutions, strict=True):
                        if resolution.status == FAILED:
                            bad.append(BadRow(line, "row", f"could not be applied: {type(resolution.error).__name__}"))
                    bad.sort(key=lambda b: b.line)
                    applied = [r for r in resolutions if r.status == APPLIED]
                    writebacks = sum(1 for r in applied if r.writeback == "queued")
                    job = ImportJob.objects.select_for_update().get(pk=job.pk)
                    job.rows_done += taken
                    job.created += sum(1 for r in applied if r.created)
                    job.matched += sum(1 for r in applied if not r.created)
                    job.superseded += sum(1 for r in resolutions if r.status == SUPERSEDED)
                    job.suspects_queued += sum(len(r.queued_candidates) for r in applied)
                    job.rejected += len(bad)
                    job.writebacks_queued += writebacks
                    room = MAX_STORED_ERRORS - len(job.errors)
                    job.errors = job.errors + [b.__dict__ for b in bad[: max(room, 0)]]
                    job.save()
                    if writebacks:
                        queue_flush()
                for row in bad:
                    errors_out.writerow([row.line, row.field, row.message])
                # With DEBUG on, Django keeps every statement's SQL; ours carry 2,000 keys each.
                reset_queries()
                batches += 1
                if progress:
                    progress(job, counter.count / max(size, 1), time.monotonic() - started)
                if stop_after_batches is not None and batches >= stop_after_batches:
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
