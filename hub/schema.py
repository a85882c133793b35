"""OpenAPI schema post-processing (drf-spectacular hooks)."""

from __future__ import annotations

from typing import Any

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
