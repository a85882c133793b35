"""``manage.py import_subscribers FILE.csv``: backfill from a Marketing Cloud subscriber export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.marketing_cloud.backfill import (
    DEFAULT_BATCH,
    ImportRefused,
    import_subscribers,
    print_progress,
    read_columns,
)
from integrations.marketing_cloud.exports import ColumnError, parse_column_map


class Command(BaseCommand):
    help = (
        "Import a subscriber export (header row; SubscriberKey, EmailAddress and optionally the journey's other "
        "in-argument columns, or the columns of Marketing Cloud's own exports and extracts such as SubscriberID, "
        "DateCreated, DateUnsubscribed, Status, EmailAddress) through the hub's matching rules, in batches, "
        "resumable; queues the write-backs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
        parser.add_argument(
            "--workers",
            type=int,
            default=min(2, os.cpu_count() or 1),
            help="Processes applying batches side by side (default: up to 2, the cores of a small machine)",
        )
        parser.add_argument("--restart", action="store_true", help="Start over instead of resuming (or re-import)")
        parser.add_argument("--no-writeback", action="store_true", help="Do not queue master-ID write-backs")
        parser.add_argument("--quiet", action="store_true", help="No progress bar")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="OLD=NEW",
            help="Read the file's column OLD as the hub's column NEW (repeatable); OLD= ignores the column",
        )
        parser.add_argument(
            "--time-zone",
            default=None,
            help="IANA zone of dates without an offset (default: Marketing Cloud system time, UTC-6 all year)",
        )

    def handle(
        self,
        *args: Any,
        file: Path,
        batch_size: int,
        workers: int,
        restart: bool,
        no_writeback: bool,
        quiet: bool,
        map: list[str],  # noqa: A002 - the option's name
        time_zone: str | None,
        **options: Any,
    ) -> None:
        if not file.is_file():
            raise CommandError(f"{file} is not a file")
        if not 1 <= batch_size <= 2000:
            raise CommandError("--batch-size must be between 1 and 2000")
        if not 1 <= workers <= 16:
            raise CommandError("--workers must be between 1 and 16")
        try:
            column_map = parse_column_map(map)
            plan = read_columns(file, column_map)
        except (ColumnError, ImportRefused) as exc:
            raise CommandError(str(exc)) from None
        for old, new in plan.mapped.items():
            self.stderr.write(f"column {old!r} read as {new}")
        if plan.ignored:
            self.stderr.write(f"columns ignored: {', '.join(plan.ignored)}")
        progress = (
            None if quiet else (lambda job, fraction, elapsed: print_progress(job, fraction, elapsed, self.stderr._out))
        )
        try:
            job = import_subscribers(
                file,
                column_map=column_map,
                time_zone=time_zone,
                batch_size=batch_size,
                workers=workers,
                restart=restart,
                writeback=not no_writeback,
                progress=progress,
                notice=self.stderr.write,
            )
        except ImportRefused as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            raise CommandError("Interrupted: run the same command again to resume after the last batch.") from None
        if not quiet:
            self.stderr.write("")
        for error in job.errors[:20]:
            self.stderr.write(f"line {error['line']}: {error['field']}: {error['message']}")
        if job.rejected > 20:
            self.stderr.write(f"... {job.rejected - 20} more bad rows; see {file}.errors.csv")
        self.stdout.write(
            f"Import {job.pk}: {job.rows_done:,} rows, {job.created:,} golden records created, {job.matched:,} "
            f"matched, {job.superseded:,} superseded, {job.suspects_queued:,} possible duplicates queued for review, "
            f"{job.rejected:,} bad rows skipped, "
            f"{job.writebacks_queued:,} write-backs queued."
        )
