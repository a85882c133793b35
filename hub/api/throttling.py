"""Per-API-key throttling, counted in a cache every web worker shares (the database).

DRF's own throttles count in Django's cache; a per-process cache would let each
gunicorn worker grant the full rate. Throttling is a guard against a runaway
client, not a security boundary (DRF says as much): the proxy keeps coarse limits.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework.throttling import SimpleRateThrottle


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"
    cache = caches["shared"]

    def get_rate(self) -> str | None:
        return settings.API_KEY_RATE or None

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        client = getattr(request.user, "client", None)
        if client is None:
            return None  # JWT- and signature-authenticated senders (Marketing Cloud) are not throttled here
        return f"throttle:api-key:{client.pk}"
