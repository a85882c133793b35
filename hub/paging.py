"""An admin paginator that never counts a whole large table.

Django's changelist counts the filtered result to number its pages; on a million
rows that is a full scan per page view. This paginator counts at most ``CAP`` rows
(a LIMITed subquery), so a list shows "10,000+" worth of pages and stays fast.
"""

from __future__ import annotations

from functools import cached_property

from django.core.paginator import Paginator

CAP = 10_000


class CappedCountPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        try:
            return self.object_list[:CAP].count()
        except (AttributeError, TypeError):
            return len(self.object_list)
