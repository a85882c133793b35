"""Problem details (RFC 9457): the body every refusal of the hub carries, and the plain Django response.

Django only (no DRF), so that the WSGI wrapper and the middlewares can use it before the apps load.
DRF views answer with ``hub.api.problems.problem``, which builds the same body.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"

# What a refusal is about when the caller names nothing more precise: a client reads
# ``errors[].field`` for every problem, so 401, 404 and 429 name the part of the request too.
# Headers are ``header.<Name>``, query parameters ``query.<name>``, body fields their JSON path.
FIELD_BY_STATUS = {
    401: "header.Authorization",
    403: "header.Authorization",
    404: "path",
    405: "method",
    406: "header.Accept",
    411: "header.Content-Length",
    413: "body",
    415: "header.Content-Type",
}
WHOLE_REQUEST = "request"


def problem_body(
    status: int,
    title: str,
    detail: str = "",
    *,
    errors: list[dict[str, Any]] | None = None,
    field: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An RFC 9457 body whose ``errors`` list is never empty.

    Without ``errors``, the list holds one entry: ``field`` (or the part of the request the
    status is about, :data:`FIELD_BY_STATUS`) with the detail, or the title when there is none.
    """
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body["errors"] = errors or [
        {"field": field or FIELD_BY_STATUS.get(status, WHOLE_REQUEST), "message": detail or title}
    ]
    body.update(extra)
    return body


def problem_response(
    status: int,
    title: str,
    detail: str = "",
    *,
    errors: list[dict[str, Any]] | None = None,
    field: str | None = None,
) -> JsonResponse:
    """A problem answered from a plain Django view or a middleware."""
    body = problem_body(status, title, detail, errors=errors, field=field)
    return JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
