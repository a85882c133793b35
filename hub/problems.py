"""Problem details (RFC 9457): the body every refusal of the hub carries, and the plain Django response.

Django only (no DRF), so that the WSGI wrapper and the middlewares can use it before the apps load.
DRF views answer with ``hub.api.problems.problem``, which builds the same body.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_body(
    status: int, title: str, detail: str = "", *, errors: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def problem_response(
    status: int, title: str, detail: str = "", *, errors: list[dict[str, Any]] | None = None
) -> JsonResponse:
    """A problem answered from a plain Django view or a middleware."""
    body = problem_body(status, title, detail, errors=errors)
    return JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
