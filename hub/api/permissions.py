"""The one permission class of the API: the authenticated key must hold the view's ``required_scope``."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request


class HasScope(permissions.BasePermission):
    """Grants access when the caller holds the scope the view names in ``required_scope``.

    The default permission class (``REST_FRAMEWORK`` in ``hub.settings``): a view declares only its
    scope (``required_scope = "read"``). A view that names none is refused to every caller, so a
    forgotten declaration fails closed; views open to other authentication (a JWT, an HMAC
    signature) say so with their own ``permission_classes``. The caller is what
    ``hub.api.auth.ApiKeyAuthentication`` authenticated (an ``ApiPrincipal``): anything without
    ``has_scope`` holds no scope.
    """

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        scope = getattr(view, "required_scope", None)
        if not scope:
            return False
        has_scope = getattr(request.user, "has_scope", None)
        if callable(has_scope) and has_scope(scope):
            return True
        # DRF makes one instance per request, so the refusal can name the missing scope.
        self.message = f"This API key lacks the {scope} scope."
        return False
