"""Security headers Django 5.2 does not set itself (its CSP support arrives in 6.0), and request guards."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

from django.http import HttpRequest, HttpResponse

from hub.problems import PROBLEM_CONTENT_TYPE, problem_body, problem_response

# The admin and the API need nothing from other origins; pages that do (the Journey
# Builder activity page) set their own policy, which is left alone.
DEFAULT_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response


API_PREFIX = "/api/"
# Headers of a refusal a client acts on, kept when its body is replaced.
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")
_DETAIL_BY_STATUS = {
    404: "No API operation at this path.",
    500: "Nothing was stored; retry later.",
}


class ApiProblemMiddleware:
    """Every refusal under ``/api/`` is problem+json, whoever made it.

    The API's views answer problems themselves; this covers the rest: Django's own 404 for a
    path no route matches, ``require_POST``'s 405, the 500 of an unexpected error (``handler500``),
    and any middleware's refusal. Their body (HTML, or empty) is replaced; the headers a client
    acts on are kept.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not request.path.startswith(API_PREFIX)
            or response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE)
            or response.streaming
        ):
            return response
        status = response.status_code
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
        detail = _DETAIL_BY_STATUS.get(status, "")
        if status == 405 and response.has_header("Allow"):
            detail = f"Allowed: {response['Allow']}."
        replaced = problem_response(status, title, detail)
        for name in _KEPT_HEADERS:
            if response.has_header(name):
                replaced[name] = response[name]
        return replaced


# Control characters have no place in a path (NUL cannot even reach PostgreSQL, which refuses it
# in text); in a query string only NUL is refused, since a pasted search may hold a tab.
_PATH_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _control_character_errors(request: HttpRequest) -> list[dict[str, str]]:
    if _PATH_CONTROL.search(request.path_info):
        return [{"field": "path", "message": "must not contain control characters"}]
    query = request.META.get("QUERY_STRING", "")
    if "%00" not in query and "\x00" not in query:
        return []
    for name, values in request.GET.lists():
        if "\x00" in name:
            return [{"field": "query", "message": "a parameter name must not contain NUL"}]
        if any("\x00" in value for value in values):
            return [{"field": f"query.{name}", "message": "must not contain NUL"}]
    return []


class RequestGuardMiddleware:
    """Refuses, before URL resolution and any view, what no view could handle.

    A path with control characters, or a query parameter with NUL: 400 naming it (today a
    lookup or an admin search with NUL fails in PostgreSQL). A chunked body without a
    Content-Length that the server did not read into one (``ChunkedBodyReader`` does under
    gunicorn): 411, since Django would read it as empty.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        errors = _control_character_errors(request)
        if errors:
            return problem_response(400, "Invalid request", "Control characters are not allowed here.", errors=errors)
        if _chunked_without_length(request.META) and "wsgi.input" in request.META:
            return problem_response(
                411, "Length required", "Send a Content-Length (this server cannot read a chunked body)."
            )
        return self.get_response(request)


def _chunked_without_length(environ: Mapping[str, Any]) -> bool:
    return "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower() and not environ.get("CONTENT_LENGTH")


class ChunkedBodyReader:
    """WSGI middleware: read a chunked body whole, so Django sees it with its length.

    gunicorn decodes a chunked body but passes no CONTENT_LENGTH, and Django reads a body
    without one as empty. Where the server marks the input as terminated
    (``wsgi.input_terminated``, as gunicorn does), the body is read here, at most
    ``limit`` bytes (413 beyond), and handed on with its length. Elsewhere
    ``RequestGuardMiddleware`` answers 411.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _chunked_without_length(environ) and environ.get("wsgi.input_terminated"):
            body = environ["wsgi.input"].read(self.limit + 1)
            if len(body) > self.limit:
                problem = problem_body(413, "Body too large", f"A body is limited to {self.limit} bytes.")
                start_response("413 Content Too Large", [("Content-Type", PROBLEM_CONTENT_TYPE)])
                return [json.dumps(problem).encode()]
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)
