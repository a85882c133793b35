"""Salesforce core client: OAuth client credentials, then an upsert by the master-ID external ID field.

One client per org, addressed by its My Domain URL (a downstream target's URL). Requests, the status
policy and the shared token are the transport's (``integrations.transport``); every request goes
through the session the caller gives, which for deliveries is ``downstream.egress.delivery_session``
(https, checked public addresses, no redirects). Of an answer only its status, its size and an error
code from ``SALESFORCE_ERROR_CODES`` are kept, never its body: it could be what an internal service
said. Settings: ``SF_CLIENT_ID``, ``SF_CLIENT_SECRET``, ``SF_API_VERSION``, ``SF_SOBJECT``,
``SF_MASTER_ID_FIELD`` (``hub/settings.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings

from integrations.models import AccessToken
from integrations.transport import (
    Answer,
    CachedToken,
    FreshToken,
    PermanentError,
    StatusPolicy,
    TransientError,
    Verdict,
    raise_for_status,
    request,
)

SALESFORCE = "SALESFORCE"
HTTP_TIMEOUT = 10.0
# An answer is counted up to this size and read no further (nothing of it is stored).
MAX_ANSWER_BYTES = 1024 * 1024
# Client-credentials tokens carry no expires_in; the session lasts its policy (2 h by default).
TOKEN_LIFETIME = dt.timedelta(minutes=90)
# The org's API request limit is spent for now: wait, as for a 429.
POLICY = StatusPolicy({(403, "REQUEST_LIMIT_EXCEEDED"): Verdict(permanent=False, wait=300.0)})

# Salesforce's own error codes (REST errorCode, OAuth error): one of these is kept with a failure,
# since it names the refusal; anything else in an answer, message text included, is not kept.
SALESFORCE_ERROR_CODES = frozenset(
    {
        "API_CURRENTLY_DISABLED",
        "API_DISABLED_FOR_ORG",
        "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
        "DUPLICATE_VALUE",
        "DUPLICATES_DETECTED",
        "ENTITY_IS_DELETED",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "FIELD_INTEGRITY_EXCEPTION",
        "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "INVALID_AUTH_HEADER",
        "INVALID_CROSS_REFERENCE_KEY",
        "INVALID_EMAIL_ADDRESS",
        "INVALID_FIELD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_SESSION_ID",
        "INVALID_TYPE",
        "JSON_PARSER_ERROR",
        "MALFORMED_ID",
        "METHOD_NOT_ALLOWED",
        "NOT_FOUND",
        "REQUEST_LIMIT_EXCEEDED",
        "REQUIRED_FIELD_MISSING",
        "SERVER_UNAVAILABLE",
        "STRING_TOO_LONG",
        "UNABLE_TO_LOCK_ROW",
        "UNKNOWN_EXCEPTION",
        "invalid_client",
        "invalid_client_id",
        "invalid_grant",
        "invalid_request",
        "unsupported_grant_type",
    }
)


def token_system(org_key: str) -> str:
    """The ``AccessToken.system`` of an org's shared token."""
    return f"{SALESFORCE}:{org_key}"


def salesforce_error_code(answer_body: bytes) -> str:
    """The Salesforce error code in an answer, when it is one of SALESFORCE_ERROR_CODES; else ''."""
    try:
        parsed = json.loads(answer_body)
    except ValueError:
        return ""
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        code = parsed[0].get("errorCode")
    elif isinstance(parsed, dict):
        code = parsed.get("error")
    else:
        return ""
    return code if isinstance(code, str) and code in SALESFORCE_ERROR_CODES else ""


def _same_https_host(url: str, expected: str) -> bool:
    """``url`` is https (or the scheme ``expected`` has, for development) on ``expected``'s host and port."""
    try:
        given, wanted = urlsplit(url), urlsplit(expected)
        return (given.scheme, given.hostname, given.port) == (wanted.scheme, wanted.hostname, wanted.port) and (
            given.scheme == "https" or settings.DOWNSTREAM_ALLOW_HTTP
        )
    except ValueError:
        return False


@dataclass(frozen=True)
class SalesforceSettings:
    """The connected app and the object the master ID is upserted on."""

    client_id: str
    client_secret: str
    api_version: str
    sobject: str
    master_id_field: str

    @classmethod
    def from_settings(cls) -> SalesforceSettings:
        return cls(
            client_id=settings.SF_CLIENT_ID,
            client_secret=settings.SF_CLIENT_SECRET,
            api_version=settings.SF_API_VERSION,
            sobject=settings.SF_SOBJECT,
            master_id_field=settings.SF_MASTER_ID_FIELD,
        )


class SalesforceClient:
    """One org, at ``my_domain_url``; ``org_key`` names its shared token (``AccessToken`` ``SALESFORCE:<key>``)."""

    def __init__(
        self,
        my_domain_url: str,
        *,
        org_key: str,
        session: requests.Session,
        config: SalesforceSettings | None = None,
    ) -> None:
        self.my_domain_url = my_domain_url.rstrip("/")
        self.session = session
        self.config = config or SalesforceSettings.from_settings()
        self.tokens = CachedToken(token_system(org_key), self._fetch_token)

    def _send(self, method: str, url: str, **kwargs: Any) -> Answer:
        return request(
            self.session, method, url, timeout=HTTP_TIMEOUT, system="salesforce", max_bytes=MAX_ANSWER_BYTES, **kwargs
        )

    def _fetch_token(self) -> FreshToken:
        answer = self._send(
            "POST",
            f"{self.my_domain_url}/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret,
            },
        )
        what = "Salesforce's token endpoint"
        code = salesforce_error_code(answer.body)
        raise_for_status(answer, what=what, label=answer.label(code), error_code=code, policy=POLICY)
        try:
            body = answer.json()
            access_token = body["access_token"]
        except (ValueError, TypeError, KeyError):
            raise TransientError(
                f"{what} answered {answer.describe()} without a token",
                http_status=answer.status,
                response_bytes=answer.size,
            ) from None
        instance_url = body.get("instance_url") or self.my_domain_url
        if not isinstance(instance_url, str) or not _same_https_host(instance_url, self.my_domain_url):
            # The REST calls carry the bearer token and the personal data: only to the org's own My
            # Domain (what the token endpoint of a My Domain answers), never where an answer points.
            raise PermanentError(
                f"{what} named an instance_url on another host than the target's My Domain",
                http_status=answer.status,
                response_bytes=answer.size,
            )
        return FreshToken(access_token=access_token, lifetime=TOKEN_LIFETIME, instance_url=instance_url)

    def upsert(self, master_id: str, fields: dict[str, Any]) -> Answer:
        """``PATCH .../sobjects/{SF_SOBJECT}/{SF_MASTER_ID_FIELD}/{master ID}``: create or update that record.

        An expired session (401 INVALID_SESSION_ID) gets a fresh token, once.
        """
        config = self.config
        path = (
            f"/services/data/{config.api_version}/sobjects/{quote(config.sobject)}/"
            f"{quote(config.master_id_field)}/{quote(master_id, safe='')}"
        )

        def send(token: AccessToken) -> Answer:
            # instance_url came from the token endpoint's answer: the session checks it like any address.
            base = (token.rest_instance_url or self.my_domain_url).rstrip("/")
            return self._send(
                "PATCH", base + path, json=fields, headers={"Authorization": f"Bearer {token.access_token}"}
            )

        answer = self.tokens.call(send)
        code = salesforce_error_code(answer.body) if answer.status >= 300 else ""
        what = "Salesforce (several records hold this master ID)" if answer.status == 300 else "Salesforce"
        raise_for_status(answer, what=what, label=answer.label(code), error_code=code, policy=POLICY)
        return answer
