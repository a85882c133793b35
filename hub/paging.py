"""Paging: an admin paginator that never counts a whole large table, the API's page size cap, and
cursors that refuse what they did not issue.

Django's changelist counts the filtered result to number its pages; on a million
rows that is a full scan per page view. ``CappedCountPaginator`` counts at most ``CAP``
rows (a LIMITed subquery), so a list shows "10,000+" worth of pages and stays fast.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import Paginator
from django.db import DataError
from django.db.models import QuerySet
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, LimitOffsetPagination
from rest_framework.request import Request

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


class ApiCursorPagination(CursorPagination):
    """Cursor paging where a cursor the API did not issue is a 400 naming ``cursor``.

    DRF answers an undecodable cursor with 404, and one that decodes but holds a position
    the ordering field cannot take (``p=2024`` for a date-time) with whatever the field
    raises while the page's query is built or run: a 500. Both are the caller's mistake.
    """

    invalid_cursor = "is not a cursor this API issued"

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: [self.invalid_cursor]}) from None

    def paginate_queryset(self, queryset: QuerySet[Any], request: Request, view: Any = None) -> list[Any] | None:
        if not request.query_params.get(self.cursor_query_param):
            return super().paginate_queryset(queryset, request, view)
        try:
            return super().paginate_queryset(queryset, request, view)
        # What a position of the wrong type or range raises: the field's own check, the conversion
        # of an out-of-range date-time, or PostgreSQL's refusal of the value.
        except (DjangoValidationError, ValueError, OverflowError, DataError):
            raise ValidationError({self.cursor_query_param: [self.invalid_cursor]}) from None
