"""Estimate the matcher's match weights from the hub's data and decisions; save them as a draft model."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from customers.training import collect, format_report, save_draft, train


class Command(BaseCommand):
    help = (
        "Train the probabilistic matcher (u from random golden-record pairs, m by EM over blocked pairs, "
        "steward decisions as labels), print precision and recall at candidate thresholds, and save a new "
        "draft model. Nothing changes until a steward activates it in the admin (Matcher models)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--random-records", type=int, default=4000, help="golden records sampled for u")
        parser.add_argument("--blocked-records", type=int, default=3000, help="golden records sampled for EM")
        parser.add_argument("--target-precision", type=float, default=0.995)
        parser.add_argument("--review-recall", type=float, default=0.99)
        parser.add_argument("--max-iterations", type=int, default=100)
        parser.add_argument("--seed", type=int, default=13)
        parser.add_argument("--notes", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("random_records", "blocked_records", "max_iterations"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("target_precision", "review_recall"):
            if not 0 < options[name] <= 1:
                raise CommandError(f"--{name.replace('_', '-')} must be in (0, 1]")
        data = collect(
            random_records=options["random_records"], blocked_records=options["blocked_records"], seed=options["seed"]
        )
        try:
            trained = train(
                data,
                target_precision=options["target_precision"],
                review_recall=options["review_recall"],
                max_iterations=options["max_iterations"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        row = save_draft(trained, actor="train_matcher", notes=options["notes"])
        self.stdout.write(format_report(trained.report))
        self.stdout.write(
            f"Saved matcher model v{row.version} as a draft. A steward activates it in the admin "
            "(Matcher models), after its dry run."
        )
