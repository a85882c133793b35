"""Marketing Cloud REST client: OAuth client credentials, data-extension upserts, error policy.

Facts (shared reference §3.3-3.4): tokens come from ``POST {auth}/v2/token`` with a
JSON body, live 20 minutes, and the response names the tenant's REST base
(``rest_instance_url``). REST errors are ``{"message", "errorcode", "documentation"}``;
401 errorcode 0 is a missing/expired token; 429 is throttling (50100 with
``Retry-After``, 50200 "temporarily blocked" without); 400 (10000-10006) and 403
(20000-20002) will not succeed on retry.

The request wrapper, the status table, the shared token and the breaker are the transport's
(``integrations.transport``); this module names Marketing Cloud's part of them: its URLs, its
429 without Retry-After, and how its error bodies read. Redirects are not followed.
"""

from __future__ import annotations

import datetime as dt
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings

from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.business_units import BusinessUnit
from integrations.models import AccessToken
from integrations.transport import (
    Answer,
    CachedToken,
    CircuitBreaker,
    FreshToken,
    PermanentError,
    StatusPolicy,
    TransientError,
    Verdict,
    raise_for_status,
)
from integrations.transport import request as send_request

# Refresh this long before Marketing Cloud's own expiry, so a token never dies mid-call.
TOKEN_EXPIRY_MARGIN = dt.timedelta(seconds=60)
# 50200 ("temporarily blocked") carries no Retry-After; back off longer than for 50100.
BLOCKED_MIN_WAIT = 60.0
# Read no further: a row read page (at most 2,500 rows) is a few MiB; far more is no answer the hub asked for.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
# The transport's table, and a 429 without any wait named is 50200: a minute at least.
POLICY = StatusPolicy({429: Verdict(permanent=False, wait=BLOCKED_MIN_WAIT)})

# The one breaker for Marketing Cloud's API, shared by every worker (write-back asks it before calling).
breaker = CircuitBreaker(MARKETING_CLOUD)


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
        token_system: str = MARKETING_CLOUD,
    ) -> None:
        if not (auth_base_url and client_id and client_secret):
            raise PermanentError("Marketing Cloud is not configured (MC_AUTH_BASE_URL, MC_CLIENT_ID, MC_CLIENT_SECRET)")
        self.auth_base_url = auth_base_url.rstrip("/")
        self.rest_base_url = rest_base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.account_id = account_id
        self.timeout = timeout
        self.session = session or requests.Session()
        # One cached token per business unit: a token acts on the MID it was requested for.
        self.tokens = CachedToken(token_system, self._fresh_token, margin=TOKEN_EXPIRY_MARGIN)

    @classmethod
    def from_settings(
        cls, session: requests.Session | None = None, *, unit: BusinessUnit | None = None
    ) -> MarketingCloudClient:
        """The client of ``unit`` (default: the default unit): the shared package, that unit's MID and token."""
        unit = unit or business_units.default_unit()
        return cls(
            auth_base_url=settings.MC_AUTH_BASE_URL,
            rest_base_url=settings.MC_REST_BASE_URL,
            client_id=settings.MC_CLIENT_ID,
            client_secret=settings.MC_CLIENT_SECRET,
            account_id=unit.mid,
            timeout=settings.MC_HTTP_TIMEOUT,
            session=session,
            token_system=unit.token_system,
        )

    # -- tokens ---------------------------------------------------------------
    def get_token(self) -> AccessToken:
        """The shared token (``transport.CachedToken``: fetched once for all workers, under a row lock)."""
        return self.tokens.get()

    def token_info(self) -> dict[str, Any]:
        """A new token straight from ``/v2/token``, with the scopes and instance URLs it names.

        Not cached or shared: ``mc_check`` uses it to see what the installed package grants.
        """
        return self._fetch_token()

    def invalidate_token(self, access_token: str) -> None:
        self.tokens.invalidate(access_token)

    def _fresh_token(self) -> FreshToken:
        body = self._fetch_token()
        return FreshToken(
            access_token=body["access_token"],
            lifetime=dt.timedelta(seconds=int(body.get("expires_in") or 1080)),
            instance_url=str(body.get("rest_instance_url") or ""),
        )

    def _fetch_token(self) -> dict[str, Any]:
        payload = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret}
        if self.account_id:
            payload["account_id"] = self.account_id
        answer = send_request(
            self.session,
            "POST",
            f"{self.auth_base_url}/v2/token",
            json=payload,
            timeout=self.timeout,
            system="marketing_cloud",
            what="token request",
            max_bytes=MAX_ANSWER_BYTES,
        )
        raise_for_status(answer, what="token request", label=f": {_error_detail(answer)}", policy=POLICY)
        try:
            body = answer.json()
            body["access_token"]  # noqa: B018 - presence check
        except (ValueError, KeyError, TypeError):
            raise TransientError("token response is not the expected JSON", http_status=answer.status) from None
        return body

    # -- REST -----------------------------------------------------------------
    def _rest_url(self, token: AccessToken, path: str) -> str:
        base = self.rest_base_url or token.rest_instance_url.rstrip("/")
        if not base:
            raise PermanentError("no REST base URL: set MC_REST_BASE_URL or use a token with rest_instance_url")
        return f"{base}{path}"

    def request(self, method: str, path: str, *, json: Any = None) -> Any:
        """A REST call with the shared token; a 401 refreshes the token once and repeats the call."""

        def send(token: AccessToken) -> Answer:
            return send_request(
                self.session,
                method,
                self._rest_url(token, path),
                json=json,
                headers={"Authorization": f"Bearer {token.access_token}"},
                timeout=self.timeout,
                system="marketing_cloud",
                what=method,
                max_bytes=MAX_ANSWER_BYTES,
            )

        return self._result(self.tokens.call(send))

    def _result(self, answer: Answer) -> Any:
        body = _error_body(answer)
        if 200 <= answer.status < 300:
            if answer.truncated:  # the same call would answer as much again
                raise PermanentError(
                    f"Marketing Cloud answered more than {answer.limit} bytes", http_status=answer.status
                )
            return body if answer.body else None
        code = str(body.get("errorcode", "")) if isinstance(body, dict) else ""
        retry_after = answer.retry_after
        if retry_after is None and isinstance(body, dict) and str(body.get("retryAfter", "")).isdigit():
            retry_after = float(body["retryAfter"])
        # Every other status is a failure: this raises.
        raise_for_status(
            answer,
            what="Marketing Cloud",
            label=f" (errorcode {code or '?'}): {_error_detail(answer)}",
            error_code=code,
            policy=POLICY,
            retry_after=retry_after,
            detail=_kept_detail(body),
        )
        return None

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


def unit_client(unit: BusinessUnit, given: Any = None) -> Any:
    """The client of ``unit``: ``given`` (a client a caller handed in) serves the default unit, others get their own."""
    if given is not None and unit == business_units.default_unit():
        return given
    return MarketingCloudClient.from_settings(unit=unit)


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


def _error_body(answer: Answer) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _error_detail(answer: Answer) -> str:
    body = _error_body(answer)
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
    text = answer.body[:1000].decode("utf-8", "replace").strip()
    return (text or _status_phrase(answer.status))[:200]


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
