"""A local HTTP emulator of the Salesforce Marketing Cloud endpoints the hub talks to.

The hub is developed and tested without a real Marketing Cloud tenant, so this module answers the
auth (``/v2/token``) and data extension REST calls with the same request and error shapes as SFMC,
and adds switches for latency and injected failures so retry and back-off code can be exercised.
It also plays the Event Notification Service (ENS): callbacks are registered and verified through
``/platform/v1/ens-*`` as on a real tenant, and :meth:`MarketingCloudSandbox.deliver_ens` pushes
signed event batches to them (the signing lives in :mod:`.ens`).

It deliberately imports nothing from Django: tests, benchmarks and ``make run`` start it as a plain
library or through the ``mc_sandbox`` management command, and other processes drive it over the
``/__sandbox/`` control endpoints.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from integrations.marketing_cloud.sandbox.ens import (
    KEY_ENCODINGS,
    SIGNATURE_HEADER,
    encode_batch,
    new_signature_key,
    sign_ens,
    tamper_signature,
)
from integrations.sandbox_http import ApiError, EmulatorServer, Fault, Reply

__all__ = ["FAULT_KINDS", "MarketingCloudSandbox", "SandboxConfig"]

DOCS_URL = "https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm"
OAUTH_ERROR_URI = "https://developer.salesforce.com"
TOKEN_SCOPE = "data_extensions_read data_extensions_write list_and_subscribers_read"
TOKEN_PATH = "/v2/token"
FAULT_KINDS = frozenset({"429", "429-blocked", "500", "503", "400", "403", "401", "timeout", "reset"})

# SFMC caps the GET rowset page size at 2500 and uses that when none is asked for.
MAX_PAGE_SIZE = 2500
DEFAULT_RETRY_AFTER = 5

_ROW_PATH = re.compile(r"^/hub/v1/dataevents/key:([^/]+)/rows/([^/]+)$")
_ROWSET_PATH = re.compile(r"^/hub/v1/dataevents/key:([^/]+)/rowset$")
_QUERY_PATH = re.compile(r"^/data/v1/customobjectdata/key/([^/]+)/rowset$")
# The primary key value in a row path is usually a subscriber key or an email address: it is
# replaced before anything is logged so personal data never reaches a log.
_ROW_VALUE_IN_PATH = re.compile(r"(/rows/[^/]*?(?::|%3[aA]))[^/]*")
_FILTER_CLAUSE = re.compile(r"\s*([A-Za-z_][\w]*)\s+(eq|ne|gt|ge|lt|le)\s+'((?:[^']|'')*)'\s*", re.IGNORECASE)
_FILTER_AND = re.compile(r"and\b", re.IGNORECASE)
# ENS (Event Notification Service) routes, answered with the shapes of Salesforce's reference pages.
ENS_CALLBACKS_PATH = "/platform/v1/ens-callbacks"
ENS_VERIFY_PATH = "/platform/v1/ens-verify"
ENS_SUBSCRIPTIONS_PATH = "/platform/v1/ens-subscriptions"
ENS_REGENERATE_PATH = "/platform/v1/ens-regenerate"
_ENS_CALLBACK_PATH = re.compile(r"^/platform/v1/ens-callbacks/([^/]+)$")
_ENS_SUBSCRIPTION_PATH = re.compile(r"^/platform/v1/ens-subscriptions/([^/]+)$")
_ENS_SUBSCRIPTIONS_BY_CB_PATH = re.compile(r"^/platform/v1/ens-subscriptions-by-cb/([^/]+)$")
ENS_MIN_BATCH, ENS_MAX_BATCH = 100, 1000
ENS_MAX_SUBSCRIPTIONS_PER_CALLBACK = 200
# Fully qualified event types are NotificationEventCategory.NotificationEventType.
_ENS_EVENT_TYPE = re.compile(r"^[A-Za-z]+\.[A-Za-z]+$")
_ENS_FILTER = re.compile(r"^([A-Za-z_][\w]*)=(.*)$", re.DOTALL)
_FILTER_OPS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


@dataclass
class SandboxConfig:
    """Credentials the sandbox accepts and the knobs that make it misbehave."""

    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    account_id: str = ""  # MID; when set, a token request naming another MID is refused
    token_ttl: int = 1080  # seconds, returned as expires_in (SFMC issues 18-minute tokens)
    latency_ms: int = 0  # added before every MC endpoint response
    fail_rate: float = 0.0  # fraction of non-token REST calls answered with a random 500
    seed: int | None = None
    # Real ENS only accepts https://host[/path] callback URLs (no port, no query). Tests and
    # `make run` use http://127.0.0.1:<port>, so that is allowed unless this is switched off.
    allow_insecure_callbacks: bool = True
    ens_verify_timeout: float = 30.0  # seconds ENS waits for the callback to answer its verification POST
    ens_delivery_timeout: float = 3.0  # seconds a callback has to answer a notification batch


@dataclass
class _DataExtension:
    key_columns: tuple[str, ...]
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Insertion-ordered, as the GET rowset pages through rows in the order they were created.
    rows: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class _EnsCallback:
    callback_id: str
    name: str
    url: str
    max_batch_size: int
    signature_key: str
    verification_key: str
    verified: bool = False

    def view(self) -> dict[str, Any]:
        """The callback as GET returns it: never with its signature or verification key."""
        return {
            "callbackId": self.callback_id,
            "callbackName": self.name,
            "url": self.url,
            "maxBatchSize": self.max_batch_size,
            "status": "verified" if self.verified else "unverified",
            "statusReason": "none" if self.verified else "Awaiting verification",
        }


@dataclass
class _EnsSubscription:
    subscription_id: str
    name: str
    callback_id: str
    event_types: list[str]
    filters: list[str]
    status: str = "active"

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether ENS would send ``event`` through this subscription.

        Filters are ``name=value`` pairs that must all hold. The filterable data items Salesforce
        lists (definitionKey, statusCode, bounceCode, smtpReason) live either on the event or in
        its ``info``, so both places are looked at.
        """
        if self.status != "active" or event.get("eventCategoryType") not in self.event_types:
            return False
        info = event.get("info") if isinstance(event.get("info"), dict) else {}
        for item in self.filters:
            name, _, expected = item.partition("=")
            actual = event.get(name, info.get(name))
            if actual is None or str(actual) != expected:
                return False
        return True


def _rest_error(status: int, errorcode: int, message: str, documentation: str = DOCS_URL) -> ApiError:
    return ApiError(status, {"message": message, "errorcode": errorcode, "documentation": documentation})


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return Reply(status, {"error": error, "error_description": description, "error_uri": OAUTH_ERROR_URI})


def redact_path(path: str) -> str:
    """Return ``path`` without its query string and with any row key value masked, safe to log."""
    path = path.split("?", 1)[0]
    return _ROW_VALUE_IN_PATH.sub(r"\1*", path)


def _as_cell(value: Any) -> str:
    # SFMC stores every data extension value as text; booleans come back as True/False.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    raise _rest_error(400, 10001, "Invalid data type")


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _rest_error(400, 10004, "Invalid message format") from None


def _checked_values(item: Any) -> dict[str, str]:
    values = item.get("values") if isinstance(item, dict) else None
    if not isinstance(values, dict):
        raise _rest_error(400, 10002, "Missing required field: values")
    return {name: _as_cell(value) for name, value in values.items()}


def _checked_keys(item: dict[str, Any]) -> dict[str, str]:
    keys = item.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise _rest_error(400, 10002, "Missing required field: keys")
    result = {}
    for name, value in keys.items():
        if value is None:
            raise _rest_error(400, 10005, "Invalid value")
        result[name] = _as_cell(value)
    return result


def _parse_filter(expression: str) -> list[tuple[str, str, str]]:
    """Parse ``Col op 'value' [and Col op 'value' ...]``; anything richer is refused as SFMC would."""
    clauses = []
    position = 0
    while True:
        match = _FILTER_CLAUSE.match(expression, position)
        if match is None:
            raise _rest_error(400, 10005, "Invalid value")
        column, operator, literal = match.groups()
        clauses.append((column.lower(), operator.lower(), literal.replace("''", "'")))
        position = match.end()
        if position == len(expression):
            return clauses
        joiner = _FILTER_AND.match(expression, position)
        if joiner is None:
            raise _rest_error(400, 10005, "Invalid value")
        position = joiner.end()


def _parse_order(expression: str) -> list[tuple[str, bool]]:
    order = []
    for part in expression.split(","):
        words = part.split()
        if not words or len(words) > 2:
            raise _rest_error(400, 10005, "Invalid value")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise _rest_error(400, 10005, "Invalid value")
        order.append((words[0].lower(), direction == "desc"))
    return order


def _post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, str]:
    """POST ``body`` to ``url``; return (status, reason), with status 0 when no HTTP answer came.

    http.client rather than urllib: urllib raises on non-2xx and follows nothing useful here, and
    the server module stays free of third-party imports.
    """
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    except ValueError as error:  # e.g. a non-numeric port
        return 0, str(error)
    try:
        connection.request("POST", target, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        response.read()
        return response.status, response.reason
    except TimeoutError:
        return 0, "Timeout"
    except (OSError, http.client.HTTPException) as error:
        return 0, type(error).__name__
    finally:
        connection.close()


def _callback_url_problem(url: str, insecure_ok: bool) -> str | None:
    """Why ENS would refuse ``url`` as a callback URL, or None when it is acceptable."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a malformed port
    except ValueError:
        return "The url must be in the format https://host[/path]"
    if parts.scheme not in (("https", "http") if insecure_ok else ("https",)) or not parts.hostname:
        return "The url must be in the format https://host[/path]"
    # Query strings are refused even in insecure mode: a real tenant never accepts them.
    if parts.query or parts.fragment or parts.username or parts.password:
        return "A query string is not supported in the url"
    if port is not None and not insecure_ok:
        return "A port is not supported in the url"
    return None


def _ens_string(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _rest_error(400, 10002, f"Missing required field: {name}")
    return value


def _positive_int(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        raise _rest_error(400, 10005, "Invalid value") from None
    if number < 1:
        raise _rest_error(400, 10005, "Invalid value")
    return number


class MarketingCloudSandbox(EmulatorServer[SandboxConfig]):
    """A threaded HTTP server answering like SFMC's auth and REST endpoints.

    The socket is bound in the constructor, so :attr:`url` is known (also with ``port=0``) before
    :meth:`start` or :meth:`serve_forever` is called.
    """

    name = "mc-sandbox"
    server_version = "MarketingCloudSandbox/1.0"
    token_path = TOKEN_PATH
    fault_kinds = FAULT_KINDS
    config_class = SandboxConfig
    content_type = "application/json; charset=utf-8"
    content_type_without_body = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        super().__init__(host, port, config, verbose=verbose)
        self._des: dict[str, _DataExtension] = {}
        # Insertion-ordered, so "the first verified callback" is the one registered first.
        self._ens_callbacks: dict[str, _EnsCallback] = {}
        self._ens_subscriptions: dict[str, _EnsSubscription] = {}

    # -- test and control API ----------------------------------------------------------------

    def rows(self, de_key: str) -> dict[str, dict[str, str]]:
        """Primary key value (several key columns joined with "|") -> copy of the stored row."""
        with self._lock:
            de = self._des.get(de_key)
            return {} if de is None else {pk: dict(row) for pk, row in de.rows.items()}

    def _checked_config_value(self, name: str, value: Any) -> Any:
        # Only the fields SFMC's config adds are checked here; latency, failures and seed by the base.
        if name in ("client_id", "client_secret", "account_id"):
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
        elif name == "token_ttl":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        elif name == "allow_insecure_callbacks":
            if not isinstance(value, bool):
                raise ValueError("allow_insecure_callbacks must be true or false")
        elif name in ("ens_verify_timeout", "ens_delivery_timeout"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        else:
            return super()._checked_config_value(name, value)
        return value

    def _reset_state(self) -> None:
        self._des.clear()
        self._ens_callbacks.clear()
        self._ens_subscriptions.clear()

    # -- Event Notification Service ----------------------------------------------------------

    def callbacks(self) -> list[dict[str, Any]]:
        """Registered ENS callbacks, oldest first, including the keys GET never shows.

        Besides the GET fields each has ``signatureKey``, ``verificationKey`` and ``verified``, so
        a test can check what the hub stored or verify a callback without a live receiver.
        """
        with self._lock:
            return [
                {
                    **callback.view(),
                    "signatureKey": callback.signature_key,
                    "verificationKey": callback.verification_key,
                    "verified": callback.verified,
                }
                for callback in self._ens_callbacks.values()
            ]

    def subscriptions(self) -> list[dict[str, Any]]:
        """ENS subscriptions, oldest first, as ``GET /platform/v1/ens-subscriptions/{id}`` shows them."""
        with self._lock:
            return [self._subscription_view(subscription) for subscription in self._ens_subscriptions.values()]

    def deliver_ens(
        self,
        events: list[dict[str, Any]],
        *,
        callback_id: str | None = None,
        signature_key: str | None = None,
        tamper: bool = False,
        key_encoding: str = "base64",
    ) -> list[int]:
        """Send ``events`` to a callback as ENS does and return the HTTP status of each batch POST.

        Without ``callback_id`` the target is the first verified callback (in registration order)
        with an active subscription matching any of the events, and only the events its
        subscriptions cover (event type and filters) are sent, like real ENS; if no callback
        qualifies nothing is sent and ``[]`` is returned. With ``callback_id`` every event goes to
        that callback, verified or not, which is a test override ENS itself never does.

        Events keep their order and are split into batches of the callback's ``maxBatchSize``.
        Each batch is signed with the callback's signature key, or ``signature_key`` if given,
        read as ``key_encoding`` says (``"base64"``-decoded or ``"raw"`` bytes: tenants' readings
        are not documented, see ``ens.signature_key_bytes``); ``tamper`` sends a well-formed but
        wrong signature. A status of 0 means no HTTP answer
        (connection refused, or none within ``ens_delivery_timeout`` -- ENS's 3 s limit). Failed
        batches are not retried: ENS would retry three times, but tests want each POST visible.
        """
        if not isinstance(events, list) or not all(
            isinstance(event, dict) and isinstance(event.get("eventCategoryType"), str) for event in events
        ):
            raise ValueError("events must be a list of objects, each with an eventCategoryType")
        if key_encoding not in KEY_ENCODINGS:
            raise ValueError(f"keyEncoding must be one of {', '.join(KEY_ENCODINGS)}")
        with self._lock:
            timeout = self.config.ens_delivery_timeout
            if callback_id is not None:
                target = self._ens_callbacks.get(callback_id)
                if target is None:
                    raise ValueError(f"no ENS callback with id {callback_id!r}")
                selected = list(events)
            else:
                target, selected = None, []
                for callback in self._ens_callbacks.values():
                    if not callback.verified:
                        continue
                    subscriptions = [
                        s for s in self._ens_subscriptions.values() if s.callback_id == callback.callback_id
                    ]
                    selected = [event for event in events if any(s.matches(event) for s in subscriptions)]
                    if selected:
                        target = callback
                        break
                if target is None:
                    return []
            url, batch_size = target.url, target.max_batch_size
            key = signature_key if signature_key is not None else target.signature_key
        statuses = []
        # Sent outside the lock: the hub's callback may well call back into the sandbox meanwhile.
        for start in range(0, len(selected), batch_size):
            body = encode_batch(selected[start : start + batch_size])
            signature = sign_ens(body, key, key_encoding)
            if tamper:
                signature = tamper_signature(signature)
            status, _ = _post_json(url, body, {SIGNATURE_HEADER: signature}, timeout)
            statuses.append(status)
        return statuses

    # -- request handling --------------------------------------------------------------------

    def _redact(self, path: str) -> str:
        return redact_path(path)

    def _random_failure_reply(self) -> Reply:
        return _rest_error(500, 50000, "Internal Server Error").reply

    def _unreadable_body_reply(self, status: int, message: str) -> Reply:
        # SFMC's error shape, with the HTTP status as error code and no documentation link.
        return _rest_error(status, status, message, "").reply

    def _fault_reply(self, fault: Fault, path: str) -> Reply:
        kind = fault.kind
        if kind == "429":
            wait = DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after
            body = {"message": "Rate limit exceeded", "errorcode": 50100, "retryAfter": wait, "documentation": DOCS_URL}
            return Reply(429, body, {"Retry-After": str(wait)})
        if kind == "429-blocked":
            return _rest_error(429, 50200, "Your requests are temporarily blocked.").reply
        if kind == "500":
            return _rest_error(500, 50000, "Internal Server Error").reply
        if kind == "503":
            return _rest_error(503, 50000, "Service Unavailable").reply
        if kind == "400":
            return _rest_error(400, 10005, "Invalid value").reply
        if kind == "403":
            return _rest_error(403, 20000, "Insufficient privileges").reply
        if kind == "401":
            self.expire_tokens()
            return _rest_error(401, 0, "Not Authorized").reply
        return Reply(0, reset=True)  # "reset"

    def _route(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Reply:
        routes: list[tuple[re.Pattern[str] | str, dict[str, Callable[..., Reply]]]] = [
            (TOKEN_PATH, {"POST": lambda m: self._issue_token(body)}),
            (_ROW_PATH, {"PUT": lambda m: self._put_row(m, body)}),
            (_ROWSET_PATH, {"POST": lambda m: self._post_rowset(m, body)}),
            (_QUERY_PATH, {"GET": lambda m: self._get_rowset(m, path, query)}),
            (
                ENS_CALLBACKS_PATH,
                {
                    "POST": lambda m: self._ens_create_callbacks(body),
                    "GET": lambda m: self._ens_list_callbacks(),
                    "PUT": lambda m: self._ens_update_callbacks(body),
                },
            ),
            (ENS_REGENERATE_PATH, {"PUT": lambda m: self._ens_regenerate(body)}),
            (
                _ENS_CALLBACK_PATH,
                {"GET": lambda m: self._ens_get_callback(m), "DELETE": lambda m: self._ens_delete_callback(m)},
            ),
            (ENS_VERIFY_PATH, {"POST": lambda m: self._ens_verify(body)}),
            (
                ENS_SUBSCRIPTIONS_PATH,
                {
                    "POST": lambda m: self._ens_create_subscriptions(body),
                    "GET": lambda m: Reply(200, self.subscriptions()),
                    "PUT": lambda m: self._ens_update_subscriptions(body),
                },
            ),
            (
                _ENS_SUBSCRIPTION_PATH,
                {"GET": lambda m: self._ens_get_subscription(m), "DELETE": lambda m: self._ens_delete_subscription(m)},
            ),
            (_ENS_SUBSCRIPTIONS_BY_CB_PATH, {"GET": lambda m: self._ens_subscriptions_by_callback(m)}),
        ]
        for pattern, methods in routes:
            match = (path == pattern) if isinstance(pattern, str) else pattern.match(path)
            if not match:
                continue
            handler = methods.get(method)
            if handler is None:
                error = _rest_error(405, 405, "Method Not Allowed", "")
                error.reply.headers["Allow"] = ", ".join(methods)
                raise error
            if pattern != TOKEN_PATH:
                self._require_token(headers)
            return handler(match)
        raise _rest_error(404, 404, "Not Found", "")

    def _require_token(self, headers: Mapping[str, str]) -> None:
        scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not self._token_is_live(token.strip()):
            raise _rest_error(401, 0, "Not Authorized")

    def _issue_token(self, body: bytes) -> Reply:
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict):
            return _oauth_error(400, "invalid_request", "The request body must be a JSON object.")
        if data.get("grant_type") != "client_credentials":
            return _oauth_error(
                400, "unsupported_grant_type", 'Use "client_credentials" as the value for the grant_type parameter.'
            )
        client_id, client_secret = data.get("client_id"), data.get("client_secret")
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            return _oauth_error(400, "invalid_request", "The client_id and client_secret parameters are required.")
        with self._lock:
            config = SandboxConfig(**asdict(self.config))
        # compare_digest on bytes: constant-time, and it accepts non-ASCII input unlike on str.
        good = secrets.compare_digest(client_id.encode(), config.client_id.encode())
        good = secrets.compare_digest(client_secret.encode(), config.client_secret.encode()) and good
        requested_mid = data.get("account_id")
        if config.account_id and requested_mid not in (None, "") and str(requested_mid) != config.account_id:
            good = False
        if not good:
            return _oauth_error(
                401,
                "invalid_client",
                "Client authentication failed. Make sure that the client ID and client secret are valid.",
            )
        token = secrets.token_urlsafe(48)
        self._remember_token(token, config.token_ttl)
        base = self.url + "/"
        return Reply(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": config.token_ttl,
                "scope": TOKEN_SCOPE,
                "soap_instance_url": base,
                "rest_instance_url": base,
            },
        )

    def _put_row(self, match: re.Match[str], body: bytes) -> Reply:
        de_key = unquote(match.group(1))
        # Split on the first colon after decoding, so a %3A-encoded separator works as well.
        pk_name, sep, pk_value = unquote(match.group(2)).partition(":")
        if not sep or not pk_name or not pk_value:
            raise _rest_error(400, 10005, "Invalid value")
        values = _checked_values(_parse_json(body))
        row = self._upsert(de_key, {pk_name: pk_value}, values)
        return Reply(200, {"keys": {pk_name: pk_value}, "values": row})

    def _post_rowset(self, match: re.Match[str], body: bytes) -> Reply:
        de_key = unquote(match.group(1))
        items = _parse_json(body)
        if not isinstance(items, list):
            raise _rest_error(400, 10004, "Invalid message format")
        # Validate everything first: SFMC rejects the whole rowset when one row is bad.
        checked = []
        for item in items:
            values = _checked_values(item)
            checked.append((_checked_keys(item), values))
        for keys, values in checked:
            self._upsert(de_key, keys, values)
        return Reply(200, items)

    def _upsert(self, de_key: str, keys: dict[str, str], values: dict[str, str]) -> dict[str, str]:
        """Merge a row and return its non-key values."""
        with self._lock:
            de = self._des.get(de_key)
            if de is None:
                de = self._des[de_key] = _DataExtension(tuple(keys))
            # Column names are case-insensitive in SFMC, so match the request's key columns that way.
            given = {name.lower(): value for name, value in keys.items()}
            if set(given) != {name.lower() for name in de.key_columns}:
                raise _rest_error(400, 10006, "Unable to save rows for data extension: primary key mismatch")
            pk = "|".join(given[name.lower()] for name in de.key_columns)
            row = de.rows.setdefault(pk, {})
            existing = {name.lower(): name for name in row}
            # Keys are applied last so a conflicting key column in "values" cannot rename the row.
            for name, value in [*values.items(), *((n, given[n.lower()]) for n in de.key_columns)]:
                row[existing.setdefault(name.lower(), name)] = value
            key_names = {name.lower() for name in de.key_columns}
            return {name: value for name, value in row.items() if name.lower() not in key_names}

    def _get_rowset(self, match: re.Match[str], path: str, query: str) -> Reply:
        de_key = unquote(match.group(1))
        params = {name: values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}
        page = _positive_int(params.get("$page"), 1)
        page_size = min(_positive_int(params.get("$pageSize"), MAX_PAGE_SIZE), MAX_PAGE_SIZE)
        clauses = _parse_filter(params["$filter"]) if params.get("$filter") else []
        order = _parse_order(params["$orderBy"]) if params.get("$orderBy") else []
        with self._lock:
            de = self._des.get(de_key)
            key_columns = de.key_columns if de else ()
            object_id = de.object_id if de else str(uuid.uuid5(uuid.NAMESPACE_URL, de_key))
            rows = [dict(row) for row in de.rows.values()] if de else []
        # SFMC answers this GET with lower-cased column names; filtering and sorting use them too.
        lowered = [{name.lower(): value for name, value in row.items()} for row in rows]
        selected = [row for row in lowered if all(_FILTER_OPS[op](row.get(col, ""), lit) for col, op, lit in clauses)]
        # Sort by the last key first; Python's stable sort then yields the full multi-key order.
        for column, descending in reversed(order):
            selected.sort(key=lambda row: row.get(column, ""), reverse=descending)
        start = (page - 1) * page_size
        key_names = [name.lower() for name in key_columns]
        items = [
            {
                "keys": {name: row.get(name, "") for name in key_names},
                "values": {name: value for name, value in row.items() if name not in key_names},
            }
            for row in selected[start : start + page_size]
        ]

        def link(to_page: int) -> str:
            kept = {"$page": to_page, "$pageSize": page_size}
            kept.update({name: params[name] for name in ("$orderBy", "$filter") if params.get(name)})
            return f"{path}?{urlencode(kept, safe='$', quote_via=quote)}"

        links = {"self": link(page)}
        if start + page_size < len(selected):
            links["next"] = link(page + 1)
        expires = datetime.now(UTC) + timedelta(minutes=20)
        return Reply(
            200,
            {
                "links": links,
                "requestToken": str(uuid.uuid4()),
                "tokenExpireDateUtc": expires.replace(tzinfo=None).isoformat(timespec="milliseconds"),
                "customObjectId": object_id,
                "customObjectKey": de_key,
                "pageSize": page_size,
                "page": page,
                "count": len(selected),
                "items": items,
            },
        )

    # -- ENS endpoints -----------------------------------------------------------------------

    def _ens_create_callbacks(self, body: bytes) -> Reply:
        items = _parse_json(body)
        if not isinstance(items, list) or not items:
            raise _rest_error(400, 10004, "Invalid message format")
        with self._lock:
            insecure_ok = self.config.allow_insecure_callbacks
            probe_timeout = self.config.ens_verify_timeout
        requested = []
        for item in items:
            if not isinstance(item, dict):
                raise _rest_error(400, 10004, "Invalid message format")
            name = _ens_string(item, "callbackName")
            url = _ens_string(item, "url")
            problem = _callback_url_problem(url, insecure_ok)
            if problem is not None:
                raise _rest_error(400, 10005, problem)
            size = item.get("maxBatchSize")
            if size is None:
                size = ENS_MAX_BATCH
            elif isinstance(size, bool) or not isinstance(size, int) or not ENS_MIN_BATCH <= size <= ENS_MAX_BATCH:
                raise _rest_error(400, 10005, "maxBatchSize must be at least 100 and no more than 1,000")
            # The verification key has the format of the documented example: 32 random bytes, base64.
            requested.append(_EnsCallback(str(uuid.uuid4()), name, url, size, new_signature_key(), new_signature_key()))
        ids = {callback.callback_id for callback in requested}
        with self._lock:
            urls = [callback.url for callback in requested]
            taken = {callback.url for callback in self._ens_callbacks.values()}
            if len(set(urls)) != len(urls) or taken.intersection(urls):
                raise _rest_error(400, 10005, "The url is already registered as a callback")
            # Stored before the probe so a hub that calls ens-verify from inside its answer to the
            # verification POST (as Salesforce suggests) finds the callback.
            for callback in requested:
                self._ens_callbacks[callback.callback_id] = callback
        for callback in requested:
            challenge = {"callbackId": callback.callback_id, "verificationKey": callback.verification_key}
            # Outside the lock: the receiver may take up to 30 s, and may call the sandbox meanwhile.
            status, reason = _post_json(callback.url, json.dumps(challenge).encode("utf-8"), {}, probe_timeout)
            # Salesforce: anything but 200 OK (or no answer within 30 s) fails the creation with 400.
            if status != 200:
                with self._lock:
                    for callback_id in ids:
                        self._ens_callbacks.pop(callback_id, None)
                    for subscription in list(self._ens_subscriptions.values()):
                        if subscription.callback_id in ids:
                            del self._ens_subscriptions[subscription.subscription_id]
                detail = f"{status} {reason}".strip() if status else reason
                raise _rest_error(
                    400,
                    10005,
                    "Callback verification failed: MCMS_UWH_Runtime_GeneralFailure_probeCallbackLiveness: "
                    f"CallbackId is {callback.callback_id}. Could not verify callback url '{callback.url}'. Please "
                    "test that the url is reachable with a POST call and returns a 200 http status code. "
                    f"Status: {detail}",
                )
        return Reply(
            201,
            [
                {
                    "callbackName": callback.name,
                    "callbackId": callback.callback_id,
                    "url": callback.url,
                    # The only time ENS ever discloses the signature key.
                    "signatureKey": callback.signature_key,
                    "maxBatchSize": callback.max_batch_size,
                }
                for callback in requested
            ],
        )

    def _ens_list_callbacks(self) -> Reply:
        with self._lock:
            return Reply(200, [callback.view() for callback in self._ens_callbacks.values()])

    def _ens_update_callbacks(self, body: bytes) -> Reply:
        """``PUT /platform/v1/ens-callbacks``: rename a callback or change its batch size, never its URL.

        Salesforce's reference takes ``callbackId``, ``callbackName`` (both required) and
        ``maxBatchSize``; the callback keeps its URL, verification and signature key.
        """
        items = _parse_json(body)
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise _rest_error(400, 10004, "Invalid message format")
        changes = []
        for item in items:
            callback_id, name = _ens_string(item, "callbackId"), _ens_string(item, "callbackName")
            size = item.get("maxBatchSize")
            if size is not None and (
                isinstance(size, bool) or not isinstance(size, int) or not ENS_MIN_BATCH <= size <= ENS_MAX_BATCH
            ):
                raise _rest_error(400, 10005, "maxBatchSize must be at least 100 and no more than 1,000")
            changes.append((callback_id, name, size))
        with self._lock:
            for callback_id, _, _ in changes:
                if callback_id not in self._ens_callbacks:
                    raise _rest_error(404, 404, "Callback ID doesn't exist")
            changed = False
            for callback_id, name, size in changes:
                callback = self._ens_callbacks[callback_id]
                new_size = callback.max_batch_size if size is None else size
                changed |= (callback.name, callback.max_batch_size) != (name, new_size)
                callback.name, callback.max_batch_size = name, new_size
            if not changed:
                return Reply(304)  # "Callback already exists on the server"
            return Reply(
                200,
                [
                    {
                        key: self._ens_callbacks[callback_id].view()[key]
                        for key in ("callbackId", "callbackName", "url", "maxBatchSize")
                    }
                    for callback_id, _, _ in changes
                ],
            )

    def _ens_regenerate(self, body: bytes) -> Reply:
        """``PUT /platform/v1/ens-regenerate``: a new signature key; the old one no longer signs."""
        items = _parse_json(body)
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise _rest_error(400, 10004, "Invalid message format")
        ids = [_ens_string(item, "callbackId") for item in items]
        with self._lock:
            if any(callback_id not in self._ens_callbacks for callback_id in ids):
                raise _rest_error(404, 404, "Callback ID doesn't exist")
            answer = []
            for callback_id in ids:
                callback = self._ens_callbacks[callback_id]
                callback.signature_key = new_signature_key()
                answer.append(
                    {
                        "callbackName": callback.name,
                        "callbackId": callback.callback_id,
                        "url": callback.url,
                        "signatureKey": callback.signature_key,
                    }
                )
            return Reply(200, answer)

    def _ens_callback(self, match: re.Match[str]) -> _EnsCallback:
        """The callback named in the path; the caller holds the lock."""
        callback = self._ens_callbacks.get(unquote(match.group(1)))
        if callback is None:
            raise _rest_error(404, 404, "Callback ID doesn't exist")
        return callback

    def _ens_get_callback(self, match: re.Match[str]) -> Reply:
        with self._lock:
            return Reply(200, self._ens_callback(match).view())

    def _ens_delete_callback(self, match: re.Match[str]) -> Reply:
        with self._lock:
            callback = self._ens_callback(match)
            if any(s.callback_id == callback.callback_id for s in self._ens_subscriptions.values()):
                raise _rest_error(
                    409,
                    409,
                    "Subscriptions exist for the callback. Delete all subscriptions for the callback before "
                    "deleting the callback.",
                )
            del self._ens_callbacks[callback.callback_id]
        # Salesforce documents no body for this 200.
        return Reply(200)

    def _ens_verify(self, body: bytes) -> Reply:
        data = _parse_json(body)
        if not isinstance(data, dict):
            raise _rest_error(400, 10004, "Invalid message format")
        callback_id = _ens_string(data, "callbackId")
        key = _ens_string(data, "verificationKey")
        with self._lock:
            callback = self._ens_callbacks.get(callback_id)
            # Salesforce answers a wrong callback ID or verification key with 404, not 400.
            if callback is None or not secrets.compare_digest(key.encode(), callback.verification_key.encode()):
                raise _rest_error(404, 404, "Incorrect callback ID, verification key, or both")
            # Verifying again with the same key succeeds again, so a hub retrying after a lost
            # response is not punished; Salesforce documents no body, the callback view is a bonus.
            callback.verified = True
            return Reply(200, callback.view())

    def _ens_create_subscriptions(self, body: bytes) -> Reply:
        items = _parse_json(body)
        if not isinstance(items, list) or not items:
            raise _rest_error(400, 10004, "Invalid message format")
        wanted = []
        for item in items:
            if not isinstance(item, dict):
                raise _rest_error(400, 10004, "Invalid message format")
            name = _ens_string(item, "subscriptionName")
            callback_id = _ens_string(item, "callbackId")
            types = item.get("eventCategoryTypes")
            if not isinstance(types, list) or not types:
                raise _rest_error(400, 10002, "Missing required field: eventCategoryTypes")
            if not all(isinstance(t, str) and _ENS_EVENT_TYPE.match(t) for t in types):
                raise _rest_error(
                    400, 10005, "eventCategoryTypes must be NotificationEventCategory.NotificationEventType values"
                )
            filters = item.get("filters")
            filters = [] if filters is None else filters
            if not isinstance(filters, list) or not all(isinstance(f, str) and _ENS_FILTER.match(f) for f in filters):
                raise _rest_error(400, 10005, "filters must be a list of name=value strings")
            wanted.append(_EnsSubscription(str(uuid.uuid4()), name, callback_id, list(dict.fromkeys(types)), filters))
        if len({subscription.name for subscription in wanted}) != len(wanted):
            raise _rest_error(400, 10005, "subscriptionName must be unique")
        with self._lock:
            by_name = {subscription.name: subscription for subscription in self._ens_subscriptions.values()}
            result, new = [], []
            for subscription in wanted:
                callback = self._ens_callbacks.get(subscription.callback_id)
                if callback is None:
                    raise _rest_error(404, 404, "Callback ID doesn't exist")
                if not callback.verified:
                    raise _rest_error(400, 10005, "The callback must be verified before a subscription can use it")
                existing = by_name.get(subscription.name)
                if existing is not None:
                    same = (existing.callback_id, existing.event_types, existing.filters)
                    if same != (subscription.callback_id, subscription.event_types, subscription.filters):
                        raise _rest_error(400, 10005, "subscriptionName must be unique")
                    result.append(existing)
                    continue
                siblings = [*self._ens_subscriptions.values(), *new]
                in_use = sum(1 for s in siblings if s.callback_id == callback.callback_id)
                if in_use >= ENS_MAX_SUBSCRIPTIONS_PER_CALLBACK:
                    raise _rest_error(400, 10005, "A callback can have at most 200 subscriptions")
                new.append(subscription)
                result.append(subscription)
            if not new:
                # Salesforce: "304 No Change - Subscription already exists on the server".
                return Reply(304)
            for subscription in new:
                self._ens_subscriptions[subscription.subscription_id] = subscription
            return Reply(
                201,
                [
                    {
                        "callbackId": subscription.callback_id,
                        "callbackName": self._ens_callbacks[subscription.callback_id].name,
                        "subscriptionName": subscription.name,
                        "eventCategoryTypes": list(subscription.event_types),
                        "subscriptionId": subscription.subscription_id,
                        "filters": list(subscription.filters),
                        "status": subscription.status,
                    }
                    for subscription in result
                ],
            )

    def _ens_update_subscriptions(self, body: bytes) -> Reply:
        """``PUT /platform/v1/ens-subscriptions``: change a subscription's types, filters, name or status."""
        items = _parse_json(body)
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise _rest_error(400, 10004, "Invalid message format")
        with self._lock:
            updates = []
            for item in items:
                subscription = self._ens_subscriptions.get(_ens_string(item, "subscriptionId"))
                if subscription is None:
                    raise _rest_error(404, 404, "Subscription ID doesn't exist")
                name = item.get("subscriptionName", subscription.name)
                types = item.get("eventCategoryTypes", subscription.event_types)
                filters = item.get("filters", subscription.filters)
                status = item.get("status", subscription.status)
                if not isinstance(name, str) or not name.strip():
                    raise _rest_error(400, 10005, "subscriptionName must be a non-empty string")
                if (
                    not isinstance(types, list)
                    or not types
                    or not all(isinstance(t, str) and _ENS_EVENT_TYPE.match(t) for t in types)
                ):
                    raise _rest_error(
                        400, 10005, "eventCategoryTypes must be NotificationEventCategory.NotificationEventType values"
                    )
                if not isinstance(filters, list) or not all(
                    isinstance(f, str) and _ENS_FILTER.match(f) for f in filters
                ):
                    raise _rest_error(400, 10005, "filters must be a list of name=value strings")
                if status not in ("active", "paused"):
                    raise _rest_error(400, 10005, "status must be active or paused")
                updates.append((subscription, name, list(dict.fromkeys(types)), list(filters), status))
            changed = False
            for subscription, name, types, filters, status in updates:
                changed |= (subscription.name, subscription.event_types, subscription.filters, subscription.status) != (
                    name,
                    types,
                    filters,
                    status,
                )
                subscription.name, subscription.event_types, subscription.filters = name, types, filters
                subscription.status = status
            if not changed:
                return Reply(304)  # "Update already exists on the server"
            return Reply(200, [self._subscription_view(update[0]) for update in updates])

    def _subscription_view(self, subscription: _EnsSubscription) -> dict[str, Any]:
        """The subscription as GET returns it; the caller holds the lock."""
        callback = self._ens_callbacks.get(subscription.callback_id)
        return {
            "callbackId": subscription.callback_id,
            "callbackName": callback.name if callback else "",
            "url": callback.url if callback else "",
            "maxBatchSize": callback.max_batch_size if callback else ENS_MAX_BATCH,
            "subscriptionId": subscription.subscription_id,
            "subscriptionName": subscription.name,
            "eventCategoryTypes": list(subscription.event_types),
            "filters": list(subscription.filters),
            "status": subscription.status,
            "statusReason": "none",
        }

    def _ens_subscription(self, match: re.Match[str]) -> _EnsSubscription:
        """The subscription named in the path; the caller holds the lock."""
        subscription = self._ens_subscriptions.get(unquote(match.group(1)))
        if subscription is None:
            raise _rest_error(404, 404, "Subscription ID doesn't exist")
        return subscription

    def _ens_get_subscription(self, match: re.Match[str]) -> Reply:
        with self._lock:
            return Reply(200, self._subscription_view(self._ens_subscription(match)))

    def _ens_delete_subscription(self, match: re.Match[str]) -> Reply:
        with self._lock:
            del self._ens_subscriptions[self._ens_subscription(match).subscription_id]
        return Reply(200)

    def _ens_subscriptions_by_callback(self, match: re.Match[str]) -> Reply:
        with self._lock:
            callback = self._ens_callback(match)
            return Reply(
                200,
                [
                    self._subscription_view(subscription)
                    for subscription in self._ens_subscriptions.values()
                    if subscription.callback_id == callback.callback_id
                ],
            )

    # -- control endpoints -------------------------------------------------------------------

    def _control_payload(self, body: bytes) -> dict[str, Any]:
        data = _parse_json(body) if body.strip() else {}
        if not isinstance(data, dict):
            raise _rest_error(400, 10004, "Invalid message format", "")
        return data

    def _control_error(self, message: str) -> ApiError:
        return _rest_error(400, 10005, message, "")

    def _system_control(self, method: str, sub_path: str, query: str, body: bytes) -> Reply:
        if sub_path.startswith("/rows/") and method == "GET":
            return Reply(200, self.rows(unquote(sub_path[len("/rows/") :])))
        if sub_path == "/ens/deliver" and method == "POST":
            data = self._control_payload(body)
            callback_id, signature_key, tamper = data.get("callbackId"), data.get("signatureKey"), data.get("tamper")
            key_encoding = data.get("keyEncoding", "base64")
            if callback_id is not None and not isinstance(callback_id, str):
                raise self._control_error("callbackId must be a string")
            if signature_key is not None and not isinstance(signature_key, str):
                raise self._control_error("signatureKey must be a string")
            if tamper is not None and not isinstance(tamper, bool):
                raise self._control_error("tamper must be true or false")
            try:
                statuses = self.deliver_ens(
                    data.get("events"),
                    callback_id=callback_id,
                    signature_key=signature_key,
                    tamper=bool(tamper),
                    key_encoding=key_encoding,
                )
            except ValueError as error:
                raise self._control_error(str(error)) from None
            return Reply(200, {"statuses": statuses})
        if sub_path == "/ens/callbacks" and method == "GET":
            return Reply(200, self.callbacks())
        if sub_path == "/ens/subscriptions" and method == "GET":
            return Reply(200, self.subscriptions())
        raise _rest_error(404, 404, "Not Found", "")
