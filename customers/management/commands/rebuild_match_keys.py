"""Rebuild every active golden record's blocking keys (after an upgrade, or a change to the key kinds)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from customers.models import Individual
from customers.resolution.store import UnitOfWork


class Command(BaseCommand):
    help = "Recompute the blocking keys (customers_matchkey) of every active golden record, in batches."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args: Any, batch_size: int, **options: Any) -> None:
        last, done = 0, 0
        while True:
            batch = list(
                Individual.objects.filter(pk__gt=last, merged_into__isnull=True, erased_at__isnull=True)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not batch:
                break
            with transaction.atomic():
                work = UnitOfWork()
                work.load_goldens(batch)
                work.rewrite_keys([work.golden(pk) for pk in batch])
            last, done = batch[-1], done + len(batch)
            self.stderr.write(f"\r{done} golden records keyed", ending="")
        self.stderr.write("")
        self.stdout.write(f"Rebuilt the blocking keys of {done} golden records.")
