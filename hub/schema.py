"""OpenAPI schema post-processing (drf-spectacular hooks)."""

from __future__ import annotations

from typing import Any

from customers.cim_schema import COMPONENT_NAME as INDIVIDUAL_COMPONENT
from customers.cim_schema import INDIVIDUAL_SCHEMA
from hub.problems import PROBLEM_CONTENT_TYPE

PROBLEM_COMPONENT = "Problem"
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem details (RFC 9457)",
    "description": "Every refusal of the API. `errors` is never empty: each entry names the part of the request "
    "it is about (a body field's JSON path such as `events[0].individual.birthDate`, `header.Authorization`, "
    "`query.<name>`, `path`, `method`, or `request` for the request as a whole).",
    "required": ["type", "title", "status", "errors"],
    "properties": {
        "type": {"type": "string", "example": "about:blank"},
        "title": {"type": "string", "example": "Invalid batch"},
        "status": {"type": "integer", "example": 400},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
            "example": [{"field": "events[0].individual.birthDate", "message": "must be a date (YYYY-MM-DD)"}],
        },
        "eventId": {"type": "integer", "description": "The stored rejected event, where the refusal kept one."},
    },
}

GUARD_REFUSAL = (
    "Invalid request: a control character in the path, or NUL in a query parameter "
    "(problem+json naming `path` or `query.<name>`), or the operation's own invalid input"
)


def document_request_guard(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Every operation may answer 400 from ``hub.middleware.RequestGuardMiddleware``: document it where missing."""
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"].setdefault("400", {"description": GUARD_REFUSAL})
    return result


def document_problems(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """The CIM Individual and the problem body as components; every 4xx/5xx answer is a problem."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas[INDIVIDUAL_COMPONENT] = INDIVIDUAL_SCHEMA
    schemas[PROBLEM_COMPONENT] = PROBLEM_SCHEMA
    problem = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": f"#/components/schemas/{PROBLEM_COMPONENT}"}}}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for code, response in operation.get("responses", {}).items():
                if str(code)[:1] in ("4", "5") and isinstance(response, dict) and not response.get("content"):
                    response["content"] = problem
    return result
