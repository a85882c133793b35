"""``manage.py verify_invariants``: check the hub's invariants; exit status 1 on any violation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.invariants import run_checks


class Command(BaseCommand):
    help = "Check that nothing was lost or duplicated and that Marketing Cloud agrees; exit 1 on a violation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--window",
            type=int,
            default=None,
            help="Seconds after which an event must be terminal (default: 2 × the task lease "
            "+ the longest write-back backoff)",
        )
        parser.add_argument("--ledger", type=Path, help="File of event IDs a client saw accepted, one per line")
        parser.add_argument(
            "--compare-marketing-cloud",
            action="store_true",
            help="Read the data extension and compare master IDs (sandbox or tenant)",
        )

    def handle(
        self, *args: Any, window: int | None, ledger: Path | None, compare_marketing_cloud: bool, **options: Any
    ) -> None:
        seconds = window if window is not None else 2 * settings.Q_RETRY + 300 * settings.WRITEBACK_MAX_ATTEMPTS
        ids = None
        if ledger is not None:
            try:
                ids = [int(line) for line in ledger.read_text().split() if line.strip()]
            except (OSError, ValueError) as exc:
                raise CommandError(f"cannot read the ledger: {exc}") from None
        checks = run_checks(
            window=dt.timedelta(seconds=seconds), ledger=ids, compare_marketing_cloud=compare_marketing_cloud
        )
        for check in checks:
            if check.skipped:
                self.stdout.write(f"SKIP  {check.name}: {check.skipped}")
                continue
            mark = "OK  " if check.ok else "FAIL"
            line = f"{mark}  {check.name}: {check.checked} checked, {check.violations} violation(s)"
            if check.examples:
                line += f" e.g. {', '.join(map(str, check.examples))}"
            self.stdout.write(line)
        failed = [c for c in checks if not c.ok]
        if failed:
            raise CommandError(f"{len(failed)} invariant(s) violated", returncode=1)
        self.stdout.write("All checked invariants hold.")
