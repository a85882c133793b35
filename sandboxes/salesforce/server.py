"""A local HTTP emulator of the Salesforce core REST API calls the hub makes.

The hub writes golden customer records to Salesforce (Contact, Account) by upserting on an external
ID field. This module answers those calls -- the OAuth 2.0 client credentials token request, the
upsert and read by external ID, the versions and limits resources -- with the status codes and
bodies Salesforce documents, and adds switches for latency and injected failures so retry,
re-authentication and back-off code can be exercised without an org.

It deliberately imports nothing from Django, like the Marketing Cloud sandbox next door: tests and
benchmarks start it as a plain library, and other processes drive it over the ``/__sandbox/``
control endpoints.

Shapes follow the REST API Developer Guide ("Status Codes and Error Responses", "sObject Rows by
External ID", "Versions", "Limits", "Limit Info Header") and Salesforce Help's "OAuth 2.0 Client
Credentials Flow for Server-to-Server Integration".
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import string
import sys
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from sandboxes.http import ApiError, EmulatorServer, Fault, Reply

__all__ = ["FAULT_KINDS", "SalesforceSandbox", "SalesforceSandboxConfig", "redact_path"]

TOKEN_PATH = "/services/oauth2/token"
DATA_ROOT = "/services/data"
FAULT_KINDS = frozenset({"401", "400", "403-limit", "404", "500", "503", "timeout", "reset"})
# What a connected app with the "Manage user data via APIs" scope is granted.
TOKEN_SCOPE = "api"
# The versions resource of a current org starts at Summer '14.
OLDEST_VERSION = 31
# Upsert answers an update with 200 and a body carrying "created" from v46.0; before, with a bare 204.
CREATED_FLAG_VERSION = 46

NOT_FOUND_MESSAGE = "The requested resource does not exist"
SESSION_MESSAGE = "Session expired or invalid"

_VERSION_SEGMENT = re.compile(r"^v(\d+)\.0$")
_RECORD_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
# The external ID value in a row path is usually a customer key and may be an email address, so it
# is replaced before anything is logged.
_EXTERNAL_VALUE_IN_PATH = re.compile(r"(/sobjects/[^/]+/[^/]+/)[^/]+")
_ROW_IN_PATH = re.compile(r"(/sobjects/[^/]+/)([^/]+)$")
_SOBJECT_IN_PATH = re.compile(r"/sobjects/([^/]+)")
# Salesforce's own check is lenient; this catches the values a clean-up job must not pass through.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ID_CHARACTERS = string.ascii_letters + string.digits

# Standard fields every sObject has; none of them can be written through the API.
_SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
_HUB_EXTERNAL_ID = "Global_Customer_Id__c"
_DEFAULT_FIELDS: dict[str, frozenset[str]] = {
    "Contact": frozenset(
        {
            "AccountId",
            "Salutation",
            "FirstName",
            "LastName",
            "Name",
            "Email",
            "Phone",
            "MobilePhone",
            "HomePhone",
            "Birthdate",
            "Title",
            "Department",
            "MailingStreet",
            "MailingCity",
            "MailingState",
            "MailingPostalCode",
            "MailingCountry",
            "HasOptedOutOfEmail",
            "DoNotCall",
            "LeadSource",
            "Description",
            "OwnerId",
            _HUB_EXTERNAL_ID,
        }
    ),
    "Account": frozenset(
        {
            "Name",
            "AccountNumber",
            "Type",
            "Industry",
            "Phone",
            "Website",
            "BillingStreet",
            "BillingCity",
            "BillingState",
            "BillingPostalCode",
            "BillingCountry",
            "ShippingStreet",
            "ShippingCity",
            "ShippingState",
            "ShippingPostalCode",
            "ShippingCountry",
            "Description",
            "OwnerId",
            _HUB_EXTERNAL_ID,
        }
    ),
}
_DEFAULT_EXTERNAL_IDS: dict[str, frozenset[str]] = {
    "Contact": frozenset({_HUB_EXTERNAL_ID}),
    "Account": frozenset({_HUB_EXTERNAL_ID}),
}
# Contact.Name is a compound of FirstName and LastName: readable, never writable.
_COMPOUND_NAME = {"Contact": ("FirstName", "LastName")}
_REQUIRED_FIELDS = {"Contact": frozenset({"LastName"}), "Account": frozenset({"Name"})}
_BOOLEAN_FIELDS = frozenset({"IsDeleted", "HasOptedOutOfEmail", "DoNotCall", "HasOptedOutOfFax"})
_EMAIL_FIELDS = frozenset({"Email", "PersonEmail"})
_KEY_PREFIXES = {"Account": "001", "Contact": "003", "User": "005", "Opportunity": "006", "Lead": "00Q", "Case": "500"}


@dataclass
class SalesforceSandboxConfig:
    """Credentials the sandbox accepts, the org's schema, and the knobs that make it misbehave."""

    client_id: str = "sf-sandbox-client-id"
    client_secret: str = "sf-sandbox-client-secret"
    api_version: str = "v62.0"  # the newest version the org offers
    latency_ms: int = 0  # added before every API response
    fail_rate: float = 0.0  # fraction of non-token calls answered with a random 500
    seed: int | None = None
    # Per sObject, the fields that exist (standard system fields such as Id are always added).
    # None: Contact and Account with a typical set plus Global_Customer_Id__c.
    known_fields: dict[str, set[str]] | None = None
    # Per sObject, the fields marked External ID; None: Global_Customer_Id__c on Contact and Account.
    external_id_fields: dict[str, set[str]] | None = None
    # Seconds a session lives: Salesforce's default session timeout is two hours. The token response
    # of the client credentials flow carries no expires_in, so clients only learn of it from a 401.
    token_ttl: int = 7200
    # Daily API request allocation, reported by /limits and the Sforce-Limit-Info header.
    daily_api_limit: int = 15000


@dataclass(frozen=True)
class _SObjectType:
    """One sObject of the emulated org's schema."""

    name: str
    key_prefix: str
    fields: tuple[str, ...]  # system fields first, then the rest sorted, as describe lists them
    read_only: frozenset[str]
    external_ids: frozenset[str]
    required: frozenset[str]

    def canonical(self, name: str) -> str | None:
        """The field's API name as defined, or None; Salesforce matches field names case-insensitively."""
        lowered = name.lower()
        return next((known for known in self.fields if known.lower() == lowered), None)

    @property
    def record_key(self) -> str:
        """The field :meth:`SalesforceSandbox.records` keys rows by."""
        if _HUB_EXTERNAL_ID in self.external_ids:
            return _HUB_EXTERNAL_ID
        return min(self.external_ids) if self.external_ids else "Id"


def _error(status: int, error_code: str, message: str, error_fields: list[str] | None = None) -> ApiError:
    """Salesforce's REST error shape: a JSON array of {message, errorCode[, fields]}."""
    item: dict[str, Any] = {"message": message, "errorCode": error_code}
    if error_fields is not None:
        item["fields"] = error_fields
    return ApiError(status, [item])


def _no_such_column(name: str, sobject: str) -> ApiError:
    return _error(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name])


def _not_found(message: str = NOT_FOUND_MESSAGE) -> ApiError:
    return _error(404, "NOT_FOUND", message)


def _oauth_error(error: str, description: str) -> Reply:
    # The token endpoint answers every refusal with 400 and the OAuth shape, not the REST array.
    return Reply(400, {"error": error, "error_description": description})


def redact_path(path: str) -> str:
    """Return ``path`` without its query string and with external ID values masked, safe to log."""
    path = path.split("?", 1)[0]
    path = _EXTERNAL_VALUE_IN_PATH.sub(r"\1*", path)
    # A single segment after the sObject is normally a record Id, which is not personal data;
    # anything else there may be a value someone typed, so it is masked as well.
    match = _ROW_IN_PATH.search(path)
    if match and match.group(2) != "*" and not _RECORD_ID.match(unquote(match.group(2))):
        path = path[: match.start(2)] + "*"
    return path


def _release_label(major: int) -> str:
    """The release name of an API version: three a year, v60.0 being Spring '24."""
    offset = major - 60
    season = ("Spring", "Summer", "Winter")[offset % 3]
    # Winter releases ship in autumn and are named after the following year.
    year = 24 + offset // 3 + (1 if season == "Winter" else 0)
    return f"{season} '{year:02d}"


def _sf_datetime(moment: datetime) -> str:
    # The REST API's dateTime format: milliseconds and a +0000 offset, not ISO's "Z".
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}+0000"


def _key_prefix(sobject: str) -> str:
    known = _KEY_PREFIXES.get(sobject)
    if known:
        return known
    # Custom objects get "a" plus two characters; deriving them from the name keeps Ids stable
    # across runs and distinct between objects (collisions are harmless: records are per sObject).
    number = zlib.crc32(sobject.encode()) % (62 * 62)
    return "a" + _ID_CHARACTERS[number // 62] + _ID_CHARACTERS[number % 62]


def _build_schema(config: SalesforceSandboxConfig) -> dict[str, _SObjectType]:
    """sObject name in lower case -> its type, from the configured (or default) fields."""
    known = _DEFAULT_FIELDS if config.known_fields is None else config.known_fields
    external = _DEFAULT_EXTERNAL_IDS if config.external_id_fields is None else config.external_id_fields
    schema = {}
    for name in sorted(set(known) | set(external)):
        ext = frozenset(external.get(name, ()))
        custom = (set(known.get(name, ())) | ext) - set(_SYSTEM_FIELDS)
        read_only = set(_SYSTEM_FIELDS)
        if name in _COMPOUND_NAME and "Name" in custom:
            read_only.add("Name")
        schema[name.lower()] = _SObjectType(
            name=name,
            key_prefix=_key_prefix(name),
            fields=(*_SYSTEM_FIELDS, *sorted(custom)),
            read_only=frozenset(read_only),
            external_ids=ext,
            required=_REQUIRED_FIELDS.get(name, frozenset()) & custom,
        )
    return schema


def _json_token(value: Any) -> str:
    """The Jackson token name Salesforce's parser reports for a JSON value it cannot bind."""
    if isinstance(value, dict):
        return "START_OBJECT"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    if isinstance(value, int):
        return "VALUE_NUMBER_INT"
    if isinstance(value, float):
        return "VALUE_NUMBER_FLOAT"
    return "VALUE_STRING"


def _parse_record_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise _error(400, "JSON_PARSER_ERROR", "The HTTP entity body is required, but this request has no entity body.")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise _error(400, "JSON_PARSER_ERROR", "Invalid UTF-8 in the request body") from None
    except json.JSONDecodeError as error:
        raise _error(400, "JSON_PARSER_ERROR", f"{error.msg} at [line:{error.lineno}, column:{error.colno}]") from None
    if not isinstance(data, dict):
        raise _error(
            400,
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of sObject from {_json_token(data)} value at [line:1, column:1]",
        )
    # A record may carry its own "attributes" ({"type": ...}); Salesforce accepts and ignores it.
    data.pop("attributes", None)
    return data


def _string_sets(name: str, value: Any) -> dict[str, set[str]] | None:
    """Validate and normalise a ``{sObject: [field, ...]}`` config value (JSON gives lists, not sets)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must map sObject names to lists of field names")
    result = {}
    for sobject, names in value.items():
        if not isinstance(sobject, str) or not sobject:
            raise ValueError(f"{name} keys must be sObject names")
        if isinstance(names, str) or not isinstance(names, Iterable):
            raise ValueError(f"{name}[{sobject!r}] must be a list of field names")
        names = set(names)
        if not all(isinstance(item, str) and item for item in names):
            raise ValueError(f"{name}[{sobject!r}] must be a list of field names")
        result[sobject] = names
    return result


class SalesforceSandbox(EmulatorServer[SalesforceSandboxConfig]):
    """A threaded HTTP server answering like a Salesforce org's OAuth and REST endpoints.

    The socket is bound in the constructor, so :attr:`url` (the org's "My Domain" URL, which is
    also returned as ``instance_url``) is known, also with ``port=0``, before :meth:`start`.
    """

    name = "sf-sandbox"
    server_version = "SalesforceSandbox/1.0"
    token_path = TOKEN_PATH
    fault_kinds = FAULT_KINDS
    config_class = SalesforceSandboxConfig
    content_type = "application/json;charset=UTF-8"
    content_type_without_body = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SalesforceSandboxConfig | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        config = config or SalesforceSandboxConfig()
        # Validate up front (before the socket is bound), so a typo in a test's config fails at
        # construction, not mid-request.
        for item in fields(SalesforceSandboxConfig):
            setattr(config, item.name, self._checked_config_value(item.name, getattr(config, item.name)))
        super().__init__(host, port, config, verbose=verbose)
        # Fixed per sandbox: they appear in tokens and in the identity URL.
        self._org_id = "00D" + self._random_chars(12)
        self._user_id = "005" + self._random_chars(12)
        # sObject API name -> record Id -> fields (every field of the type, None when unset).
        self._records: dict[str, dict[str, dict[str, Any]]] = {}
        self._api_usage = 0

    # -- test and control API ----------------------------------------------------------------

    def records(self, sobject: str, key_field: str | None = None) -> dict[str, dict[str, Any]]:
        """External ID value -> copy of the stored record (all fields, including ``Id``).

        Rows are keyed by ``key_field``, by default the sObject's Global_Customer_Id__c (or its
        first external ID field); a record without a value there is keyed by its Id. Records that
        share a value (a non-unique external ID, which the 300 answer is about) keep only the last.
        """
        with self._lock:
            kind = _build_schema(self.config).get(sobject.lower())
            if kind is None:
                return {}
            key = kind.canonical(key_field) if key_field else kind.record_key
            if key is None:
                raise ValueError(f"{sobject} has no field {key_field!r}")
            stored = self._records.get(kind.name, {})
            return {
                str(record[key]) if record.get(key) not in (None, "") else record["Id"]: dict(record)
                for record in stored.values()
            }

    def _checked_config_value(self, name: str, value: Any) -> Any:
        # Only the fields of the org's config are checked here; latency, failures and seed by the base.
        if name in ("client_id", "client_secret"):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        elif name == "api_version":
            match = _VERSION_SEGMENT.match(value) if isinstance(value, str) else None
            if match is None or int(match.group(1)) < OLDEST_VERSION:
                raise ValueError(f"api_version must look like 'v62.0' and be at least v{OLDEST_VERSION}.0")
        elif name in ("token_ttl", "daily_api_limit"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        elif name in ("known_fields", "external_id_fields"):
            return _string_sets(name, value)
        else:
            return super()._checked_config_value(name, value)
        return value

    def _reset_state(self) -> None:
        """Forget records and the day's API usage (reset() forgets sessions, faults and the log)."""
        self._records.clear()
        self._api_usage = 0

    # -- request handling --------------------------------------------------------------------

    def _redact(self, path: str) -> str:
        return redact_path(path)

    def _random_failure_reply(self) -> Reply:
        return self._unknown_exception().reply

    def _unreadable_body_reply(self, status: int, message: str) -> Reply:
        # Salesforce's error array; the errorCode names the refusal, as its own codes do.
        code = {411: "LENGTH_REQUIRED", 413: "REQUEST_TOO_LARGE"}[status]
        return _error(status, code, message).reply

    def _random_chars(self, length: int) -> str:
        return "".join(self._random.choice(_ID_CHARACTERS) for _ in range(length))

    def _unknown_exception(self) -> ApiError:
        with self._lock:
            error_id = (
                f"{self._random.randrange(10**9)}-{self._random.randrange(10**5)} (-{self._random.randrange(10**9)})"
            )
        message = f"An unexpected error occurred. Please include this ErrorId if you contact support: {error_id}"
        return _error(500, "UNKNOWN_EXCEPTION", message)

    def _fault_reply(self, fault: Fault, path: str) -> Reply:
        kind = fault.kind
        if kind == "401":
            # A revoked session is revoked for every caller, so the client must fetch a new token.
            self.expire_tokens()
            return _error(401, "INVALID_SESSION_ID", SESSION_MESSAGE).reply
        if kind == "400":
            match = _SOBJECT_IN_PATH.search(path)
            sobject = unquote(match.group(1)) if match else "Contact"
            return _no_such_column("Sandbox_Injected_Fault__c", sobject).reply
        if kind == "403-limit":
            return _error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.").reply
        if kind == "404":
            return _not_found().reply
        if kind == "500":
            return self._unknown_exception().reply
        if kind == "503":
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            body = [{"message": "Server is unavailable. Please try again later.", "errorCode": "SERVER_UNAVAILABLE"}]
            return Reply(503, body, headers)
        return Reply(0, reset=True)  # "reset"

    def _route(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Reply:
        if path == TOKEN_PATH:
            if method != "POST":
                return _oauth_error("invalid_request", "must use HTTP POST")
            return self._issue_token(headers, body)
        if path.rstrip("/") == DATA_ROOT:
            # The versions resource needs no session and does not count against the daily limit.
            self._allow(method, ("GET",))
            return Reply(200, self._versions())
        if not path.startswith(DATA_ROOT + "/"):
            raise _not_found()
        segments = [unquote(part) for part in path[len(DATA_ROOT) + 1 :].rstrip("/").split("/")]
        self._require_token(headers)
        major = self._version(segments[0])
        usage = self._count_api_call()
        try:
            reply = self._versioned(method, major, segments[1:], query, body, headers)
        except ApiError as error:
            reply = error.reply
        reply.headers.setdefault("Sforce-Limit-Info", usage)
        return reply

    def _versioned(
        self, method: str, major: int, segments: list[str], query: str, body: bytes, headers: Mapping[str, str]
    ) -> Reply:
        """Answer a path below /services/data/vNN.0/, given as its decoded segments."""
        base = f"{DATA_ROOT}/v{major}.0"
        if not segments:
            self._allow(method, ("GET",))
            return Reply(200, {"limits": f"{base}/limits", "sobjects": f"{base}/sobjects"})
        if segments == ["limits"]:
            self._allow(method, ("GET",))
            with self._lock:
                limit, used = self.config.daily_api_limit, self._api_usage
            return Reply(200, {"DailyApiRequests": {"Max": limit, "Remaining": max(limit - used, 0)}})
        # Only the row resources are emulated: /sobjects/{SObject}/{Id} and .../{Field}/{value}.
        if segments[0] != "sobjects" or len(segments) not in (3, 4):
            raise _not_found()
        with self._lock:
            kind = _build_schema(self.config).get(segments[1].lower())
        if kind is None:
            raise _not_found()
        if len(segments) == 3:
            if not (_RECORD_ID.match(segments[2]) and segments[2].startswith(kind.key_prefix)):
                # Salesforce reads a segment that is not a record Id as a failed external ID lookup.
                raise _not_found(f"Provided external ID field does not exist or is not accessible: {segments[2]}")
            self._allow(method, ("GET",))
            return self._get_by_id(kind, segments[2], base, query)
        ext_field = kind.canonical(segments[2])
        if ext_field is None or ext_field not in kind.external_ids:
            raise _not_found(f"Provided external ID field does not exist or is not accessible: {segments[2]}")
        self._allow(method, ("GET", "PATCH"))
        if method == "GET":
            return self._get_by_external_id(kind, ext_field, segments[3], base, query)
        return self._upsert(kind, ext_field, segments[3], major, query, headers, body)

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            message = f"HTTP Method '{method}' not allowed. Allowed are {','.join(allowed)}"
            raise ApiError(
                405, [{"errorCode": "METHOD_NOT_ALLOWED", "message": message}], {"Allow": ", ".join(allowed)}
            )

    def _newest_version(self) -> int:
        with self._lock:
            return int(self.config.api_version[1:].split(".")[0])

    def _version(self, segment: str) -> int:
        newest = self._newest_version()
        if segment == "latest":
            return newest
        match = _VERSION_SEGMENT.match(segment)
        if match is None or not OLDEST_VERSION <= int(match.group(1)) <= newest:
            raise _not_found()
        return int(match.group(1))

    def _versions(self) -> list[dict[str, str]]:
        return [
            {"label": _release_label(major), "url": f"{DATA_ROOT}/v{major}.0", "version": f"{major}.0"}
            for major in range(OLDEST_VERSION, self._newest_version() + 1)
        ]

    def _count_api_call(self) -> str:
        """Count a call against the daily allocation; return the Sforce-Limit-Info header value."""
        with self._lock:
            limit = self.config.daily_api_limit
            if self._api_usage >= limit:
                raise ApiError(
                    403,
                    [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                    {"Sforce-Limit-Info": f"api-usage={self._api_usage}/{limit}"},
                )
            self._api_usage += 1
            return f"api-usage={self._api_usage}/{limit}"

    def _require_token(self, headers: Mapping[str, str]) -> None:
        raw = (headers.get("Authorization") or "").strip()
        scheme, _, token = raw.partition(" ")
        token = token.strip()
        # Salesforce takes "OAuth <token>" as well as "Bearer <token>"; any other scheme is malformed.
        if raw and scheme.lower() not in ("bearer", "oauth"):
            raise _error(401, "INVALID_AUTH_HEADER", "INVALID_HEADER_TYPE")
        if not self._token_is_live(token):
            raise _error(401, "INVALID_SESSION_ID", SESSION_MESSAGE)

    def _issue_token(self, headers: Mapping[str, str], body: bytes) -> Reply:
        content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            # Salesforce reads the parameters only from a form body: a JSON body reads as one with
            # no grant_type at all, which is what it then complains about.
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        params = {name: values[-1] for name, values in parse_qs(text, keep_blank_values=True).items()}
        if params.get("grant_type") != "client_credentials":
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        scheme, _, encoded = (headers.get("Authorization") or "").strip().partition(" ")
        if client_id is None and scheme.lower() == "basic":
            # The flow also accepts the credentials as HTTP Basic auth instead of in the body.
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return _oauth_error("invalid_client", "invalid client credentials")
            raw_id, _, raw_secret = decoded.partition(":")
            # RFC 6749 section 2.3.1: each half is form-encoded before they are joined.
            client_id, client_secret = unquote(raw_id.replace("+", " ")), unquote(raw_secret.replace("+", " "))
        with self._lock:
            expected_id, expected_secret, ttl = self.config.client_id, self.config.client_secret, self.config.token_ttl
        # compare_digest on bytes: constant-time, and unlike on str it accepts non-ASCII input.
        if not client_id or not secrets.compare_digest(client_id.encode(), expected_id.encode()):
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if client_secret is None or not secrets.compare_digest(client_secret.encode(), expected_secret.encode()):
            return _oauth_error("invalid_client", "invalid client credentials")
        identity = f"{self.url}/id/{self._org_id}/{self._user_id}"
        issued_at = str(int(time.time() * 1000))
        # As documented: base64 HMAC-SHA256 of the identity URL followed by issued_at, keyed with
        # the consumer secret, so a client can check the response was not tampered with.
        digest = hmac.new(expected_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        token = f"{self._org_id}!{secrets.token_urlsafe(72)}"
        self._remember_token(token, ttl)
        return Reply(
            200,
            {
                "access_token": token,
                "signature": base64.b64encode(digest).decode("ascii"),
                "scope": TOKEN_SCOPE,
                "instance_url": self.url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
            },
        )

    # -- records -----------------------------------------------------------------------------

    def _matching(self, kind: _SObjectType, ext_field: str, value: str) -> list[dict[str, Any]]:
        """Stored records whose ``ext_field`` equals ``value``; the caller holds the lock."""
        # Values written through the body may be numbers, while the path always gives text.
        return [
            record
            for record in self._records.get(kind.name, {}).values()
            if record.get(ext_field) is not None and str(record[ext_field]) == value
        ]

    @staticmethod
    def _multiple_choices(kind: _SObjectType, matches: list[dict[str, Any]], base: str) -> ApiError:
        # 300: the external ID is not unique; the body lists the matching records' URLs.
        return ApiError(300, [f"{base}/sobjects/{kind.name}/{record['Id']}" for record in matches])

    @staticmethod
    def _view(kind: _SObjectType, record: dict[str, Any], base: str, query: str) -> dict[str, Any]:
        """The record as GET returns it: ``attributes`` first, then every field (or those asked for)."""
        wanted = parse_qs(query).get("fields")
        names: list[str] = list(kind.fields)
        if wanted:
            names = []
            for name in (part.strip() for part in ",".join(wanted).split(",")):
                if not name:
                    continue
                canonical = kind.canonical(name)
                if canonical is None:
                    raise _no_such_column(name, kind.name)
                names.append(canonical)
        attributes = {"type": kind.name, "url": f"{base}/sobjects/{kind.name}/{record['Id']}"}
        return {"attributes": attributes, **{name: record.get(name) for name in names}}

    def _get_by_id(self, kind: _SObjectType, record_id: str, base: str, query: str) -> Reply:
        with self._lock:
            stored = self._records.get(kind.name, {})
            # A 15-character Id is the case-sensitive form of the 18-character one.
            record = next((r for key, r in stored.items() if key == record_id or key[:15] == record_id), None)
            record = dict(record) if record is not None else None
        if record is None:
            raise _not_found()
        return Reply(200, self._view(kind, record, base, query))

    def _get_by_external_id(self, kind: _SObjectType, ext_field: str, value: str, base: str, query: str) -> Reply:
        with self._lock:
            matches = [dict(record) for record in self._matching(kind, ext_field, value)]
        if not matches:
            raise _not_found()
        if len(matches) > 1:
            raise self._multiple_choices(kind, matches, base)
        return Reply(200, self._view(kind, matches[0], base, query))

    @staticmethod
    def _checked_values(kind: _SObjectType, ext_field: str, data: dict[str, Any]) -> dict[str, Any]:
        """The body's fields under their API names, refused the way Salesforce refuses them."""
        values: dict[str, Any] = {}
        read_only = []
        for name, value in data.items():
            canonical = kind.canonical(name)
            if canonical is None:
                raise _no_such_column(name, kind.name)
            if canonical in kind.read_only:
                read_only.append(canonical)
            values[canonical] = value
        if read_only:
            raise _error(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(read_only)}. Please check the security settings of "
                "this field and verify that it is read/write for your profile or permission set.",
                read_only,
            )
        if ext_field in values:
            # Salesforce documents only that this "generates an error"; the wording here is the sandbox's.
            raise _error(
                400,
                "INVALID_FIELD",
                f"{ext_field} is the external ID field of this upsert: give its value in the URL, not the body",
                [ext_field],
            )
        for name, value in values.items():
            boolean = name in _BOOLEAN_FIELDS
            if isinstance(value, (dict, list)) or (boolean and value is not None and not isinstance(value, bool)):
                shown = json.dumps(value) if isinstance(value, (dict, list)) else value
                raise _error(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {'boolean' if boolean else 'string'} from {_json_token(value)} "
                    f"value {shown} or request may be missing a required field",
                )
            if (
                name in _EMAIL_FIELDS
                and value not in (None, "")
                and not (isinstance(value, str) and _EMAIL.match(value))
            ):
                raise _error(400, "INVALID_EMAIL_ADDRESS", f"{name}: invalid email address: {value}", [name])
        return values

    @staticmethod
    def _fill_compound_name(kind: _SObjectType, record: dict[str, Any]) -> None:
        parts = _COMPOUND_NAME.get(kind.name)
        if parts and "Name" in kind.read_only:
            words = [str(record[part]) for part in parts if record.get(part) not in (None, "")]
            record["Name"] = " ".join(words) or None

    def _upsert(
        self,
        kind: _SObjectType,
        ext_field: str,
        value: str,
        major: int,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Reply:
        content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type and content_type != "application/json":
            # Salesforce also takes XML; the hub never sends it, so it is refused like any other type.
            raise _error(
                415, "UNSUPPORTED_MEDIA_TYPE", f"MediaType of '{content_type}' is not supported by this resource"
            )
        values = self._checked_values(kind, ext_field, _parse_record_body(body))
        update_only = parse_qs(query).get("updateOnly", [""])[-1].lower() == "true"
        base = f"{DATA_ROOT}/v{major}.0"
        now = _sf_datetime(datetime.now(UTC))
        with self._lock:
            matches = self._matching(kind, ext_field, value)
            if len(matches) > 1:
                raise self._multiple_choices(kind, matches, base)
            if matches:
                record = matches[0]
                # Blanking a required field on update is refused just as leaving it out on insert is.
                missing = sorted(name for name in kind.required if name in values and values[name] in (None, ""))
                if missing:
                    raise self._required_missing(missing)
                record.update(values)
                record["LastModifiedDate"] = record["SystemModstamp"] = now
                self._fill_compound_name(kind, record)
                if major < CREATED_FLAG_VERSION:
                    return Reply(204)
                return Reply(200, {"id": record["Id"], "success": True, "errors": [], "created": False})
            if update_only:
                raise _not_found()
            missing = sorted(name for name in kind.required if values.get(name) in (None, ""))
            if missing:
                raise self._required_missing(missing)
            record_id = kind.key_prefix + self._random_chars(15)
            record = dict.fromkeys(kind.fields)
            record.update(values)
            record.update(
                {
                    "Id": record_id,
                    "IsDeleted": False,
                    "CreatedDate": now,
                    "LastModifiedDate": now,
                    "SystemModstamp": now,
                    ext_field: value,
                }
            )
            self._fill_compound_name(kind, record)
            self._records.setdefault(kind.name, {})[record_id] = record
        result: dict[str, Any] = {"id": record_id, "success": True, "errors": [], "created": True}
        if major < CREATED_FLAG_VERSION:
            del result["created"]  # the flag arrived with API v46.0
        return Reply(201, result)

    @staticmethod
    def _required_missing(names: list[str]) -> ApiError:
        return _error(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(names)}]", names)

    # -- control endpoints -------------------------------------------------------------------

    def _control_payload(self, body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict):
            raise self._control_error("the request body must be a JSON object")
        return data

    def _control_error(self, message: str) -> ApiError:
        return _error(400, "INVALID_SANDBOX_REQUEST", message)

    def _system_control(self, method: str, sub_path: str, query: str, body: bytes) -> Reply:
        if sub_path.startswith("/records/") and method == "GET":
            key = parse_qs(query).get("key", [None])[-1]
            try:
                return Reply(200, self.records(unquote(sub_path[len("/records/") :]), key))
            except ValueError as error:
                raise self._control_error(str(error)) from None
        raise _not_found()

    def _public_config(self) -> dict[str, Any]:
        data = super()._public_config()
        for name in ("known_fields", "external_id_fields"):
            if data[name] is not None:
                # JSON has no sets.
                data[name] = {sobject: sorted(names) for sobject, names in data[name].items()}
        return data


def main(argv: list[str] | None = None) -> None:
    """Run the sandbox in the foreground: ``python -m sandboxes.salesforce``."""
    parser = argparse.ArgumentParser(description="Serve a local emulator of the Salesforce REST API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--verbose", action="store_true", help="log each request (external ID values masked)")
    args = parser.parse_args(argv)
    sandbox = SalesforceSandbox(args.host, args.port, verbose=args.verbose)
    sys.stdout.write(f"Salesforce sandbox listening on {sandbox.url}\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        sandbox.serve_forever()


if __name__ == "__main__":
    main()
