"""What the steward workspace's model admins share."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from hub.paging import CappedCountPaginator

# The steward's stylesheet and the copy buttons' script, for the lists that show short master IDs.
STEWARD_CSS = {"all": ["customers/steward.css"]}
STEWARD_JS = ["customers/copy-id.js"]


def actor_of(request: HttpRequest) -> str:
    """The acting steward as history rows and decisions name them: ``user:<username>``."""
    return f"user:{request.user.get_username()}"


def short_master_id(master_id: str, individual_id: int | None = None) -> SafeString | str:
    """A master ID on one line: its last eight characters linked, the full ID in the title and a copy button.

    The end, not the start: a version 7 UUID starts with its creation time, so records made in
    the same minute share their first characters but not their last. Without a golden record's
    key the link searches for the ID (old merged IDs find their survivor), with no query here.
    """
    if not master_id:
        return "-"
    if individual_id is not None:
        url = reverse("admin:customers_individual_change", args=[individual_id])
    else:
        url = reverse("admin:customers_individual_changelist") + "?" + urlencode({"q": master_id})
    return format_html(
        '<span class="master-id"><a href="{}" title="{}">…{}</a>'
        '<button type="button" class="copy-id" data-copy="{}" title="Copy the full master ID" hidden>copy</button>'
        "</span>",
        url,
        master_id,
        master_id[-8:],
        master_id,
    )


class LargeListMixin:
    """A list over a table that may hold millions of rows: its pages never count the whole result."""

    paginator = CappedCountPaginator
    show_full_result_count = False
