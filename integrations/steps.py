"""The ordered step log of a sync run (step, start, end, outcome, detail)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Max
from django.utils import timezone

from hub.errors import error_summary
from integrations.choices import StepOutcome
from integrations.models import SyncRun, SyncStep


@dataclass
class StepResult:
    """What a step reports; ``detail`` is for stewards (IDs and rule names, never personal data)."""

    outcome: str = StepOutcome.OK
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class StepLog:
    """Collects steps in memory and writes them with the run's transaction."""

    def __init__(self, run: SyncRun) -> None:
        self.run = run
        last = SyncStep.objects.filter(run=run).aggregate(m=Max("seq"))["m"] if run.pk else None
        self._next_seq = (last or 0) + 1
        self.pending: list[SyncStep] = []

    @contextmanager
    def step(self, name: str) -> Iterator[StepResult]:
        started = timezone.now()
        result = StepResult()
        try:
            yield result
        except Exception as exc:
            self.add(name, StepOutcome.FAILED, error_summary(exc)[:2000], started=started)
            raise
        self.add(name, result.outcome, result.detail, result.data, started=started)

    def add(
        self,
        name: str,
        outcome: str,
        detail: str = "",
        data: dict[str, Any] | None = None,
        *,
        started: Any = None,
    ) -> None:
        now = timezone.now()
        self.pending.append(
            SyncStep(
                run=self.run,
                seq=self._next_seq,
                name=name,
                started_at=started or now,
                finished_at=now,
                outcome=outcome,
                detail=detail,
                data=data or {},
            )
        )
        self._next_seq += 1

    def save(self) -> None:
        if self.pending:
            SyncStep.objects.bulk_create(self.pending)
            self.pending = []
