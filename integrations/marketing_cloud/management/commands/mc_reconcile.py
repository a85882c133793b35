"""``manage.py mc_reconcile``: reconcile the data extension, then read subscriber statuses, now, here.

Cron-friendly: no prompts, one summary line on stdout, exit status 1 when the run failed (the
watermark then stays where it was, so the next run reads the same rows again). It takes the same
row lock as the scheduled run, so it waits for one already running instead of reading alongside.
What it sent is queued for the workers like any other event (``qcluster`` processes it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand

from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.poller import mc_filter_stamp, reconcile
from integrations.marketing_cloud.status_sync import read_all_statuses


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return "none"
    return f"{moment.astimezone(dt.UTC).isoformat(timespec='seconds')} (Marketing Cloud time {mc_filter_stamp(moment)})"


class Command(BaseCommand):
    help = "Reconcile the Marketing Cloud data extension now: read what changed since the watermark, send it on."

    def handle(self, *args: Any, **options: Any) -> None:
        runs = []
        for unit in business_units.units():  # each business unit's data extension, with its token
            run = reconcile(unit=unit)
            runs.append(run)
            read_from = "the start" if run.since is None else _when(run.since)
            where = f"{run.de_key} ({unit.label})" if unit.configured else run.de_key
            self.stdout.write(
                f"{where}: read {run.rows} rows in {run.pages} page(s) changed since {read_from}; "
                f"sent {run.sent}, rejected {run.rejected}; watermark {_when(run.watermark)}"
            )
            if run.status != "succeeded":
                self.stderr.write(f"reconciliation failed ({where}): {run.error}")
        failed = False
        for unit, statuses in read_all_statuses():  # each unit's All Subscribers, with its token
            where = f"All Subscribers ({unit.label})" if unit.configured else "All Subscribers"
            status_from = "the start" if statuses.since is None else _when(statuses.since)
            self.stdout.write(
                f"{where}: read {statuses.read} subscribers in {statuses.pages} page(s) changed since "
                f"{status_from}; applied {statuses.applied}, unchanged {statuses.unchanged}, "
                f"unknown {statuses.unknown}; watermark {_when(statuses.watermark)}"
            )
            if statuses.status != "succeeded":
                failed = True
                self.stderr.write(f"subscriber status read failed ({where}): {statuses.error}")
        if failed or any(run.status != "succeeded" for run in runs):
            raise SystemExit(1)
