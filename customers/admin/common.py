"""What the steward workspace's model admins share."""

from __future__ import annotations

from django.http import HttpRequest

from hub.paging import CappedCountPaginator


def actor_of(request: HttpRequest) -> str:
    """The acting steward as history rows and decisions name them: ``user:<username>``."""
    return f"user:{request.user.get_username()}"


class LargeListMixin:
    """A list over a table that may hold millions of rows: its pages never count the whole result."""

    paginator = CappedCountPaginator
    show_full_result_count = False
