"""Paging: an admin paginator that never counts a whole large table, and the API's page size cap.

Django's changelist counts the filtered result to number its pages; on a million
rows that is a full scan per page view. ``CappedCountPaginator`` counts at most ``CAP``
rows (a LIMITed subquery), so a list shows "10,000+" worth of pages and stays fast.
"""

from __future__ import annotations

from functools import cached_property

from django.core.paginator import Paginator
from rest_framework.pagination import LimitOffsetPagination

CAP = 10_000


class CappedCountPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        try:
            return self.object_list[:CAP].count()
        except (AttributeError, TypeError):
            return len(self.object_list)


class ApiPagination(LimitOffsetPagination):
    """``?limit=&offset=`` with 50 a page by default; a ``limit`` over ``max_limit`` gets ``max_limit``.

    One page of golden records is rendered in one response: an uncapped limit would let one
    request read and render the whole table.
    """

    default_limit = 50
    max_limit = 200
