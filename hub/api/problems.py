"""Problem details (RFC 9457) for every refusal the API makes: DRF's side.

``problem`` answers from a DRF view; ``problem_exception_handler`` (DRF's EXCEPTION_HANDLER) turns
DRF's own refusals (authentication, scope, throttling, validation) and unexpected errors into
problems. Plain Django views and middlewares answer with ``hub.problems.problem_response``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework import status as http
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from hub.problems import PROBLEM_CONTENT_TYPE, problem_body

logger = logging.getLogger(__name__)

# The part of the request each of DRF's refusals is about (``errors[].field``).
_FIELD_BY_EXCEPTION: tuple[tuple[type[APIException], str], ...] = (
    (exceptions.NotAuthenticated, "header.Authorization"),
    (exceptions.AuthenticationFailed, "header.Authorization"),
    (exceptions.PermissionDenied, "header.Authorization"),
    (exceptions.NotFound, "path"),
    (exceptions.MethodNotAllowed, "method"),
    (exceptions.NotAcceptable, "header.Accept"),
    (exceptions.UnsupportedMediaType, "header.Content-Type"),
    (exceptions.ParseError, "body"),
)


def _field_of(exc: APIException) -> str | None:
    return next((field for kind, field in _FIELD_BY_EXCEPTION if isinstance(exc, kind)), None)


def problem(
    status: int,
    title: str,
    detail: str = "",
    *,
    errors: list[dict[str, Any]] | None = None,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem answered from a DRF view (``errors`` and ``field`` as in ``hub.problems.problem_body``)."""
    body = problem_body(status, title, detail, errors=errors, field=field, **extra)
    response = Response(body, status=status, headers=headers)
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def _flatten(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            out += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(detail, list):
        if all(not isinstance(v, dict | list) for v in detail):
            return [{"field": prefix or "body", "message": str(v)} for v in detail]
        out = []
        for i, value in enumerate(detail):
            out += _flatten(value, f"{prefix}[{i}]")
        return out
    return [{"field": prefix or "body", "message": str(detail)}]


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if response is None:
        # Unexpected: whatever the view wrote was rolled back with its transaction. Log the
        # type only (a message can carry personal data) and answer 500 so senders retry.
        view = type(context.get("view")).__name__
        logger.error("unhandled %s in %s", type(exc).__name__, view, exc_info=settings.DEBUG)
        return problem(http.HTTP_500_INTERNAL_SERVER_ERROR, "Internal error", "Nothing was stored; retry later.")
    if isinstance(exc, ValidationError):
        return problem(http.HTTP_400_BAD_REQUEST, "Invalid data", errors=_flatten(exc.detail))
    if isinstance(exc, APIException):
        headers = {k: v for k, v in response.headers.items() if k in ("WWW-Authenticate", "Retry-After", "Allow")}
        return problem(
            response.status_code, str(exc.default_detail), str(exc.detail), field=_field_of(exc), headers=headers
        )
    return response
