"""Marketing Cloud REST client: OAuth client credentials, data-extension upserts, error policy.

Facts (shared reference §3.3-3.4): tokens come from ``POST {auth}/v2/token`` with a
JSON body, live 20 minutes, and the response names the tenant's REST base
(``rest_instance_url``). REST errors are ``{"message", "errorcode", "documentation"}``;
401 errorcode 0 is a missing/expired token; 429 is throttling (50100 with
``Retry-After``, 50200 "temporarily blocked" without); 400 (10000-10006) and 403
(20000-20002) will not succeed on retry.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from integrations.choices import MARKETING_CLOUD
from integrations.models import AccessToken
from integrations.transport import TransportError

logger = logging.getLogger(__name__)

# Refresh this long before Marketing Cloud's own expiry, so a token never dies mid-call.
TOKEN_EXPIRY_MARGIN = dt.timedelta(seconds=60)
# 50200 ("temporarily blocked") carries no Retry-After; back off longer than for 50100.
BLOCKED_MIN_WAIT = 60.0


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as delay-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - timezone.now()).total_seconds())


class MarketingCloudClient:
    """One tenant (installed package) of Marketing Cloud."""

    def __init__(
        self,
        *,
        auth_base_url: str,
        client_id: str,
        client_secret: str,
        account_id: str = "",
        rest_base_url: str = "",
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ) -> None:
        if not (auth_base_url and client_id and client_secret):
            raise TransportError(
                "Marketing Cloud is not configured (MC_AUTH_BASE_URL, MC_CLIENT_ID, MC_CLIENT_SECRET)",
                permanent=True,
            )
        self.auth_base_url = auth_base_url.rstrip("/")
        self.rest_base_url = rest_base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.account_id = account_id
        self.timeout = timeout
        self.session = session or requests.Session()
        self.token_requests = 0

    @classmethod
    def from_settings(cls, session: requests.Session | None = None) -> MarketingCloudClient:
        return cls(
            auth_base_url=settings.MC_AUTH_BASE_URL,
            rest_base_url=settings.MC_REST_BASE_URL,
            client_id=settings.MC_CLIENT_ID,
            client_secret=settings.MC_CLIENT_SECRET,
            account_id=settings.MC_ACCOUNT_ID,
            timeout=settings.MC_HTTP_TIMEOUT,
            session=session,
        )

    # -- tokens ---------------------------------------------------------------
    def _cached_token(self) -> AccessToken | None:
        token = AccessToken.objects.filter(system=MARKETING_CLOUD).first()
        if token and token.expires_at - TOKEN_EXPIRY_MARGIN > timezone.now():
            return token
        return None

    def get_token(self) -> AccessToken:
        """The shared token, fetched under a row lock so concurrent workers fetch it once."""
        token = self._cached_token()
        if token is not None:
            return token
        with transaction.atomic():
            AccessToken.objects.get_or_create(
                system=MARKETING_CLOUD, defaults={"access_token": "", "expires_at": timezone.now()}
            )
            row = AccessToken.objects.select_for_update().get(system=MARKETING_CLOUD)
            if row.access_token and row.expires_at - TOKEN_EXPIRY_MARGIN > timezone.now():
                return row  # another worker refreshed it while we waited
            body = self._fetch_token()
            row.access_token = body["access_token"]
            row.rest_instance_url = str(body.get("rest_instance_url") or "")
            row.expires_at = timezone.now() + dt.timedelta(seconds=int(body.get("expires_in") or 1080))
            row.fetched_at = timezone.now()
            row.save()
            return row

    def token_info(self) -> dict[str, Any]:
        """A new token straight from ``/v2/token``, with the scopes and instance URLs it names.

        Not cached or shared: ``mc_check`` uses it to see what the installed package grants.
        """
        return self._fetch_token()

    def invalidate_token(self, access_token: str) -> None:
        # Only the token that was refused: another worker may already hold a fresh one.
        AccessToken.objects.filter(system=MARKETING_CLOUD, access_token=access_token).update(
            expires_at=timezone.now() - dt.timedelta(days=1)
        )

    def _fetch_token(self) -> dict[str, Any]:
        payload = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret}
        if self.account_id:
            payload["account_id"] = self.account_id
        self.token_requests += 1
        try:
            response = self.session.post(f"{self.auth_base_url}/v2/token", json=payload, timeout=self.timeout)
        except requests.Timeout:
            raise TransportError("token request timed out") from None
        except requests.ConnectionError as exc:
            raise TransportError(f"token request failed: {type(exc).__name__}") from None
        if response.status_code == 200:
            try:
                body = response.json()
                body["access_token"]  # noqa: B018 - presence check
            except (ValueError, KeyError, TypeError):
                raise TransportError("token response is not the expected JSON") from None
            return body
        detail = _error_detail(response)
        if response.status_code >= 500 or response.status_code == 429:
            raise TransportError(
                f"token request failed with {response.status_code}: {detail}",
                http_status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        raise TransportError(
            f"token request refused with {response.status_code}: {detail}",
            permanent=True,
            http_status=response.status_code,
        )

    # -- REST -----------------------------------------------------------------
    def _rest_url(self, token: AccessToken, path: str) -> str:
        base = self.rest_base_url or token.rest_instance_url.rstrip("/")
        if not base:
            raise TransportError(
                "no REST base URL: set MC_REST_BASE_URL or use a token with rest_instance_url", permanent=True
            )
        return f"{base}{path}"

    def request(self, method: str, path: str, *, json: Any = None) -> Any:
        """A REST call with the shared token; a 401 refreshes the token once and retries."""
        for attempt in (1, 2):
            token = self.get_token()
            try:
                response = self.session.request(
                    method,
                    self._rest_url(token, path),
                    json=json,
                    headers={"Authorization": f"Bearer {token.access_token}"},
                    timeout=self.timeout,
                )
            except requests.Timeout:
                raise TransportError(f"{method} timed out after {self.timeout}s") from None
            except requests.ConnectionError as exc:
                raise TransportError(f"{method} connection failed: {type(exc).__name__}") from None
            if response.status_code == 401 and attempt == 1:
                self.invalidate_token(token.access_token)
                continue
            return self._result(response)
        raise AssertionError("unreachable")

    def _result(self, response: requests.Response) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json() if response.content else None
            except ValueError:
                return None
        body = _error_body(response)
        code = str(body.get("errorcode", "")) if isinstance(body, dict) else ""
        message = _error_detail(response)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is None and isinstance(body, dict) and str(body.get("retryAfter", "")).isdigit():
                retry_after = float(body["retryAfter"])
            if retry_after is None:
                retry_after = BLOCKED_MIN_WAIT  # 50200: blocked, no hint given
            raise TransportError(
                f"throttled (429, errorcode {code or '?'}): {message}",
                http_status=status,
                error_code=code,
                retry_after=retry_after,
            )
        if status >= 500 or status == 408:
            raise TransportError(
                f"server error {status}: {message}",
                http_status=status,
                error_code=code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        raise TransportError(
            f"refused with {status} (errorcode {code or '?'}): {message}",
            permanent=True,
            http_status=status,
            error_code=code,
            detail=_kept_detail(body),
        )

    def upsert_row(self, de_key: str, primary_key: str, key_value: str, values: dict[str, Any]) -> Any:
        """Upsert one data-extension row by its primary key (synchronous Hub API)."""
        path = (
            f"/hub/v1/dataevents/key:{quote(de_key, safe='')}/rows/"
            f"{quote(primary_key, safe='')}:{quote(key_value, safe='')}"
        )
        return self.request("PUT", path, json={"values": values})

    def upsert_rowset(self, de_key: str, rows: list[dict[str, Any]]) -> Any:
        """Upsert up to 50 rows in one call: ``[{"keys": {...}, "values": {...}}]``."""
        if len(rows) > 50:
            raise ValueError("Marketing Cloud advises at most 50 rows per rowset call")
        return self.request("POST", f"/hub/v1/dataevents/key:{quote(de_key, safe='')}/rowset", json=rows)


def _kept_detail(body: Any) -> dict[str, Any] | None:
    """The parts of an error body worth keeping: message, errorcode and every additional error."""
    if not isinstance(body, dict):
        return None
    kept: dict[str, Any] = {k: body[k] for k in ("message", "errorcode") if k in body}
    additional = body.get("additionalErrors")
    if isinstance(additional, list):
        items = [item for item in additional[:50] if isinstance(item, dict)]
        kept["additionalErrors"] = [{k: item[k] for k in ("message", "errorcode") if k in item} for item in items]
    return kept or None


def _error_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_detail(response: requests.Response) -> str:
    body = _error_body(response)
    if isinstance(body, dict):
        for key in ("message", "error_description", "error"):
            if body.get(key):
                text = str(body[key])[:500]
                # An aggregate error (10006) says only "Unable to save rows ...": name the causes too.
                additional = body.get("additionalErrors")
                if isinstance(additional, list):
                    causes = [str(i.get("message"))[:300] for i in additional[:3] if isinstance(i, dict)]
                    text = "; ".join([text, *causes])
                return text
    return (response.text or response.reason or "").strip()[:200]
