"""Backfill from a Marketing Cloud subscriber export (CSV), through the same rules as events.

Streaming: rows are read, validated and applied a batch at a time, so memory stays
flat whatever the file's size. Each batch commits together with the job's progress,
so an interrupted import resumes after its last committed row. Bad rows are reported
with their line numbers (and written to ``FILE.errors.csv``) and skipped; every
write-back the import makes necessary is queued.
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

from customers.bulk import SourceRecord, bulk_upsert
from customers.cim import CimValidationError, parse_individual
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud.mapping import IN_ARGUMENTS, subscriber_to_cim
from integrations.marketing_cloud.models import ImportJob

REQUIRED_COLUMNS = ("SubscriberKey", "EmailAddress")
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


def _record(args: dict[str, str]) -> SourceRecord:
    cim = subscriber_to_cim(args, prefix="row")
    source = parse_individual(cim, "row")
    from customers.cim import parse_cim_datetime

    modified = cim["auditInfo"].get("updatedDate") or cim["auditInfo"].get("createdDate")
    return SourceRecord(
        external_id=args["SubscriberKey"],
        source=source,
        modified_at=parse_cim_datetime(modified, "row.ModifiedDate") if modified else None,
        source_status=cim.get("subscriberStatus") or "",
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
    batch_size: int = 2000,
    restart: bool = False,
    writeback: bool = True,
    progress: Callable[[ImportJob, float, float], None] | None = None,
    stop_after_batches: int | None = None,
) -> ImportJob:
    """Import (or resume importing) ``path``; returns the job with its counts."""
    from integrations.marketing_cloud.writeback import queue_flush

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
            while True:
                records: list[SourceRecord] = []
                bad: list[BadRow] = []
                taken = 0
                for line, args in rows:
                    taken += 1
                    try:
                        records.append(_record(args))
                    except CimValidationError as exc:
                        bad.append(BadRow(line, exc.field.replace("row.", ""), exc.message))
                    if taken >= batch_size:
                        break
                if taken == 0:
                    break
                with transaction.atomic():
                    result = bulk_upsert(
                        records,
                        system=MARKETING_CLOUD,
                        actor=actor,
                        writeback_systems=frozenset({MARKETING_CLOUD}) if writeback else frozenset(),
                    )
                    job = ImportJob.objects.select_for_update().get(pk=job.pk)
                    job.rows_done += taken
                    job.created += result.created
                    job.matched += sum(v for k, v in result.matched.items() if k != "none")
                    job.superseded += result.superseded
                    job.rejected += len(bad)
                    job.writebacks_queued += result.writebacks
                    room = MAX_STORED_ERRORS - len(job.errors)
                    job.errors = job.errors + [b.__dict__ for b in bad[: max(room, 0)]]
                    job.save()
                    if result.writebacks:
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
