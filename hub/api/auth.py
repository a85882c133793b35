"""API-key authentication: ``Authorization: Bearer hub_<prefix>_<secret>``, stored hashed.

The keys are ``integrations.models.ApiClient`` rows (``manage.py create_api_key``); what a key may do
is checked by ``hub.api.permissions.HasScope``.
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from integrations.models import ApiClient

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class ApiPrincipal:
    """The authenticated caller of the API (what ``request.user`` holds)."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.pk = client.pk

    def __str__(self) -> str:
        return f"api-key:{self.client.name}"

    def has_scope(self, scope: str) -> bool:
        return scope in (self.client.scopes or [])


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiPrincipal, None] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise exceptions.AuthenticationFailed("Use Authorization: Bearer <API key>.")
        key = key.strip()
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "hub":
            raise exceptions.AuthenticationFailed("Invalid API key.")
        client = ApiClient.objects.filter(key_prefix=parts[1]).first()
        # Compare digests in constant time; an unknown prefix still pays for one comparison.
        expected = client.key_hash if client else "0" * 64
        if not hmac.compare_digest(expected, ApiClient.hash_key(key)) or client is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if not client.is_active:
            raise exceptions.AuthenticationFailed("API key revoked.")
        now = timezone.now()
        if client.last_used_at is None or now - client.last_used_at > LAST_USED_RESOLUTION:
            ApiClient.objects.filter(pk=client.pk).update(last_used_at=now)
        return ApiPrincipal(client), None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="hub"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Documents the API-key scheme in the OpenAPI schema."""

    target_class = "hub.api.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "hub_<prefix>_<secret>",
            "description": "API key from `manage.py create_api_key NAME`.",
        }
