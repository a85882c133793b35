"""Reading request bodies with a size limit enforced before anything is parsed.

A chunked body without a Content-Length never gets here as an empty one: under gunicorn
``hub.wsgi`` reads it whole and passes its length on, and where the server cannot,
``hub.middleware.RequestGuardMiddleware`` answers 411.
"""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.http.request import RawPostDataException
from rest_framework import status
from rest_framework.response import Response

from hub.api.problems import problem


class BodyTooLarge(Exception):
    pass


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The raw body, or BodyTooLarge when its declared or actual size exceeds ``limit``."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise BodyTooLarge
    try:
        body = request.body
    except (RequestDataTooBig, RawPostDataException):
        raise BodyTooLarge from None
    if len(body) > limit:
        raise BodyTooLarge
    return body


def read_body_or_problem(request: HttpRequest, limit: int, what: str) -> tuple[bytes, Response | None]:
    """The body, or a 413 problem response to return instead."""
    try:
        return read_body(request, limit), None
    except BodyTooLarge:
        return b"", problem(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "Body too large", f"{what} is limited to {limit} bytes."
        )
