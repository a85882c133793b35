"""Figures for the admin index's workspace box, each a capped count so the index stays cheap."""

from __future__ import annotations

from django import template
from django.db.models import QuerySet

from customers.choices import CandidateStatus
from customers.models import MatchCandidate
from integrations.models import DeadLetter

register = template.Library()

# Beyond this many the box says "1000+": counting a large backlog exactly is a slow scan for one line.
COUNT_CAP = 1000


def capped_count(queryset: QuerySet) -> str:
    """The number of rows, or "<cap>+" when there are more (one LIMITed query on the primary key)."""
    found = len(queryset.values_list("pk", flat=True)[: COUNT_CAP + 1])
    return f"{COUNT_CAP}+" if found > COUNT_CAP else str(found)


def _counted(figure: str, one: str, many: str) -> str:
    return f"{figure} {one if figure == '1' else many}"


@register.simple_tag
def workspace_counts() -> dict[str, str]:
    """ "3 open candidates", "1 dead letter": what waits in the review queue and among dead letters."""
    candidates = capped_count(MatchCandidate.objects.filter(status=CandidateStatus.OPEN))
    dead = capped_count(DeadLetter.objects.filter(replayed_at__isnull=True))
    return {
        "candidates": _counted(candidates, "open candidate", "open candidates"),
        "dead_letters": _counted(dead, "dead letter", "dead letters") + " not replayed",
    }
