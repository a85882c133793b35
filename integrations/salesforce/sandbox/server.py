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
import os
import random
import re
import secrets
import socket
import string
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FAULT_KINDS", "SalesforceSandbox", "SalesforceSandboxConfig", "redact_path"]

TOKEN_PATH = "/services/oauth2/token"
DATA_ROOT = "/services/data"
CONTROL_ROOT = "/__sandbox"
FAULT_KINDS = frozenset({"401", "400", "403-limit", "404", "500", "503", "timeout", "reset"})
# What a connected app with the "Manage user data via APIs" scope is granted.
TOKEN_SCOPE = "api"
# The versions resource of a current org starts at Summer '14.
OLDEST_VERSION = 31
# Upsert answers an update with 200 and a body carrying "created" from v46.0; before, with a bare 204.
CREATED_FLAG_VERSION = 46
# A request body larger than this is refused rather than buffered (a runaway client must not be
# able to exhaust memory on a developer machine).
MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT_DELAY = 30.0

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


@dataclass
class _Fault:
    kind: str
    count: int
    path_contains: str | None
    retry_after: int | None
    delay: float | None

    def matches(self, path: str, target: str) -> bool:
        # Faults without a path filter are meant for data calls: breaking the token endpoint too
        # would stop the client from recovering, so that only happens when asked for by path.
        if self.path_contains is None:
            return path != TOKEN_PATH
        # The filter sees the query string too, so e.g. only an updateOnly call can be broken.
        return self.path_contains in target


@dataclass
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # drop the connection without answering


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


class _ApiError(Exception):
    """Raised inside request handling to short-circuit into an error reply."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.reply = _Reply(status, body, headers or {})


def _error(status: int, error_code: str, message: str, error_fields: list[str] | None = None) -> _ApiError:
    """Salesforce's REST error shape: a JSON array of {message, errorCode[, fields]}."""
    item: dict[str, Any] = {"message": message, "errorCode": error_code}
    if error_fields is not None:
        item["fields"] = error_fields
    return _ApiError(status, [item])


def _no_such_column(name: str, sobject: str) -> _ApiError:
    return _error(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name])


def _not_found(message: str = NOT_FOUND_MESSAGE) -> _ApiError:
    return _error(404, "NOT_FOUND", message)


def _oauth_error(error: str, description: str) -> _Reply:
    # The token endpoint answers every refusal with 400 and the OAuth shape, not the REST array.
    return _Reply(400, {"error": error, "error_description": description})


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


def _checked_config_value(name: str, value: Any) -> Any:
    """Return the value to store for a config field, or raise ValueError saying what is wrong."""
    if name in ("client_id", "client_secret"):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
    elif name == "api_version":
        match = _VERSION_SEGMENT.match(value) if isinstance(value, str) else None
        if match is None or int(match.group(1)) < OLDEST_VERSION:
            raise ValueError(f"api_version must look like 'v62.0' and be at least v{OLDEST_VERSION}.0")
    elif name in ("latency_ms", "token_ttl", "daily_api_limit"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer")
    elif name == "fail_rate":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError("fail_rate must be between 0 and 1")
    elif name == "seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("seed must be an integer or null")
    elif name in ("known_fields", "external_id_fields"):
        return _string_sets(name, value)
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when a benchmark opens many at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: SalesforceSandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-response are expected here (fault injection makes
        # them on purpose), so tracebacks are only worth printing when asked for.
        if self.sandbox.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SalesforceSandbox/1.0"
    # Idle keep-alive connections are closed after this, so their threads do not linger.
    timeout = 60
    # Headers and body go out in two writes; with Nagle's algorithm the body would wait for the
    # client's delayed ACK (~40 ms per keep-alive request), which would swamp any latency setting.
    disable_nagle_algorithm = True
    server: _Server

    # BaseHTTPRequestHandler dispatches on do_<METHOD>; all go through one router so a wrong method
    # on a known path gets Salesforce's 405 instead of the stdlib's 501.
    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            # Every client the hub uses sends Content-Length; chunked bodies are not worth emulating.
            self.close_connection = True
            self._write(_Reply(411, [{"message": "Length Required", "errorCode": "LENGTH_REQUIRED"}]))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._write(_Reply(413, [{"message": "Invalid Content-Length", "errorCode": "REQUEST_TOO_LARGE"}]))
            return
        body = self.rfile.read(length) if length else b""
        reply = self.server.sandbox.handle(self.command, self.path, self.headers, body)
        if reply.reset:
            self._reset_connection()
        else:
            self._write(reply)

    def _write(self, reply: _Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode("utf-8")
        try:
            self.send_response(reply.status)
            if reply.body is not None:
                self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            # The client gave up (e.g. its read timeout fired during an injected delay).
            self.close_connection = True

    def _reset_connection(self) -> None:
        # A zero linger makes close() send RST instead of FIN, which is what a crashed load
        # balancer looks like to the client: a reset, not a clean end of stream.
        self.close_connection = True
        # Best effort: without the option the client still sees the connection drop, via FIN.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # detach() + os.close() closes the descriptor now; socket.close() would wait for rfile.
        os.close(self.connection.detach())
        self.server.sandbox._log_line(self.command, self.path, 0)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.sandbox._log_line(self.command, self.path, code)

    def log_message(self, format: str, *args: Any) -> None:
        # The base class would print the raw request line, which can carry an email address in an
        # external ID path, so only numbers (status codes) are kept from the arguments.
        if not self.server.sandbox.verbose:
            return
        try:
            text = format % tuple(arg if isinstance(arg, int) else "..." for arg in args)
        except (TypeError, ValueError):
            text = format.split("%", 1)[0].strip()
        sys.stderr.write(f"[sf-sandbox] {text}\n")


class SalesforceSandbox:
    """A threaded HTTP server answering like a Salesforce org's OAuth and REST endpoints.

    The socket is bound in the constructor, so :attr:`url` (the org's "My Domain" URL, which is
    also returned as ``instance_url``) is known, also with ``port=0``, before :meth:`start`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SalesforceSandboxConfig | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        config = config or SalesforceSandboxConfig()
        # Validate up front, so a typo in a test's config fails at construction, not mid-request.
        for item in fields(SalesforceSandboxConfig):
            setattr(config, item.name, _checked_config_value(item.name, getattr(config, item.name)))
        self.config = config
        self.verbose = verbose
        self._lock = threading.Lock()
        self._random = random.Random(config.seed)
        # Fixed per sandbox: they appear in tokens and in the identity URL.
        self._org_id = "00D" + self._random_chars(12)
        self._user_id = "005" + self._random_chars(12)
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._faults: list[_Fault] = []
        # sObject API name -> record Id -> fields (every field of the type, None when unset).
        self._records: dict[str, dict[str, dict[str, Any]]] = {}
        self._log: list[dict[str, Any]] = []
        self._api_usage = 0
        # Set on stop so injected delays end at once instead of keeping a thread asleep.
        self._stopping = threading.Event()
        self._serving = False
        self._thread: threading.Thread | None = None
        self._server = _Server((host, port), self)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        """Serve from a daemon thread and return self."""
        if self._thread is not None:
            return self
        self._serving = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sf-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called or the process is interrupted."""
        self._serving = True
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False
            self._server.server_close()

    def stop(self) -> None:
        self._stopping.set()
        if self._serving:
            self._serving = False
            # shutdown() waits for serve_forever to return; calling it when nothing serves hangs.
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- test and control API ----------------------------------------------------------------

    def inject(
        self,
        kind: str,
        count: int = 1,
        *,
        path_contains: str | None = None,
        retry_after: int | None = None,
        delay: float | None = None,
    ) -> None:
        """Queue a fault answered by the next ``count`` matching requests (see FAULT_KINDS).

        Faults are used first in, first out. Without ``path_contains`` a fault matches any call but
        the token request. ``retry_after`` adds a Retry-After header to a "503"; ``delay`` is how
        long a "timeout" stalls before answering normally (default 30 s).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive integer")
        if retry_after is not None and (isinstance(retry_after, bool) or not isinstance(retry_after, int)):
            raise ValueError("retry_after must be an integer number of seconds")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must not be negative")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0):
            raise ValueError("delay must be a non-negative number of seconds")
        if path_contains is not None and not isinstance(path_contains, str):
            raise ValueError("path_contains must be a string")
        with self._lock:
            self._faults.append(_Fault(kind, count, path_contains, retry_after, delay))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        """The faults still queued, in the order they will be used."""
        with self._lock:
            return [asdict(fault) for fault in self._faults]

    def configure(self, **changes: Any) -> None:
        """Change config fields at run time, e.g. ``configure(latency_ms=50, fail_rate=0.1)``."""
        known = {item.name for item in fields(SalesforceSandboxConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        # Check everything before changing anything, so a bad value leaves the config as it was.
        checked = {name: _checked_config_value(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self.config, name, value)
            if "seed" in checked:
                self._random.seed(checked["seed"])

    def expire_tokens(self) -> None:
        """End every session, as an admin revoking them (or the session timeout) would."""
        with self._lock:
            self._tokens.clear()

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

    def requests_log(self) -> list[dict[str, Any]]:
        """API calls as ``{"method", "path", "status", "time"}``; external ID values are masked.

        ``status`` is 0 for a connection reset on purpose; ``time`` is the Unix time it was
        answered. Request and response bodies are never recorded: they hold personal data.
        """
        with self._lock:
            return [dict(entry) for entry in self._log]

    def count(self, method: str, path_prefix: str) -> int:
        """How many logged calls used ``method`` on a (masked) path starting with ``path_prefix``."""
        method = method.upper()
        with self._lock:
            return sum(1 for e in self._log if e["method"] == method and e["path"].startswith(path_prefix))

    def reset(self) -> None:
        """Forget records, sessions, faults, the log and the day's API usage."""
        with self._lock:
            self._records.clear()
            self._tokens.clear()
            self._faults.clear()
            self._log.clear()
            self._api_usage = 0

    # -- request handling --------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        """Answer one request; called by the HTTP handler from its own thread."""
        split = urlsplit(target)
        path = split.path
        if path == CONTROL_ROOT or path.startswith(CONTROL_ROOT + "/"):
            try:
                return self._control(method, path[len(CONTROL_ROOT) :], split.query, body)
            except _ApiError as error:
                return error.reply
        reply = self._api(method, target, headers, body)
        with self._lock:
            self._log.append({"method": method, "path": redact_path(path), "status": reply.status, "time": time.time()})
        return reply

    def _api(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        split = urlsplit(target)
        path = split.path
        with self._lock:
            latency = self.config.latency_ms
        if latency > 0:
            self._stopping.wait(latency / 1000)
        fault = self._take_fault(path, target)
        if fault is not None:
            if fault.kind == "timeout":
                # The client is expected to give up first; if it doesn't, it gets a normal answer.
                self._stopping.wait(DEFAULT_TIMEOUT_DELAY if fault.delay is None else fault.delay)
            else:
                return self._fault_reply(fault, path)
        if path != TOKEN_PATH and self._random_failure():
            return self._unknown_exception().reply
        try:
            return self._route(method, path, split.query, headers, body)
        except _ApiError as error:
            return error.reply

    def _take_fault(self, path: str, target: str) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.count > 0 and fault.matches(path, target):
                    fault.count -= 1
                    if fault.count == 0:
                        del self._faults[index]
                    return fault
        return None

    def _random_failure(self) -> bool:
        with self._lock:
            rate = self.config.fail_rate
            return rate > 0 and self._random.random() < rate

    def _random_chars(self, length: int) -> str:
        return "".join(self._random.choice(_ID_CHARACTERS) for _ in range(length))

    def _unknown_exception(self) -> _ApiError:
        with self._lock:
            error_id = (
                f"{self._random.randrange(10**9)}-{self._random.randrange(10**5)} (-{self._random.randrange(10**9)})"
            )
        message = f"An unexpected error occurred. Please include this ErrorId if you contact support: {error_id}"
        return _error(500, "UNKNOWN_EXCEPTION", message)

    def _fault_reply(self, fault: _Fault, path: str) -> _Reply:
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
            return _Reply(503, body, headers)
        return _Reply(0, reset=True)  # "reset"

    def _route(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        if path == TOKEN_PATH:
            if method != "POST":
                return _oauth_error("invalid_request", "must use HTTP POST")
            return self._issue_token(headers, body)
        if path.rstrip("/") == DATA_ROOT:
            # The versions resource needs no session and does not count against the daily limit.
            self._allow(method, ("GET",))
            return _Reply(200, self._versions())
        if not path.startswith(DATA_ROOT + "/"):
            raise _not_found()
        segments = [unquote(part) for part in path[len(DATA_ROOT) + 1 :].rstrip("/").split("/")]
        self._require_token(headers)
        major = self._version(segments[0])
        usage = self._count_api_call()
        try:
            reply = self._versioned(method, major, segments[1:], query, body, headers)
        except _ApiError as error:
            reply = error.reply
        reply.headers.setdefault("Sforce-Limit-Info", usage)
        return reply

    def _versioned(
        self, method: str, major: int, segments: list[str], query: str, body: bytes, headers: Mapping[str, str]
    ) -> _Reply:
        """Answer a path below /services/data/vNN.0/, given as its decoded segments."""
        base = f"{DATA_ROOT}/v{major}.0"
        if not segments:
            self._allow(method, ("GET",))
            return _Reply(200, {"limits": f"{base}/limits", "sobjects": f"{base}/sobjects"})
        if segments == ["limits"]:
            self._allow(method, ("GET",))
            with self._lock:
                limit, used = self.config.daily_api_limit, self._api_usage
            return _Reply(200, {"DailyApiRequests": {"Max": limit, "Remaining": max(limit - used, 0)}})
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
            raise _ApiError(
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
                raise _ApiError(
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
        with self._lock:
            expires = self._tokens.get(token) if token else None
        if expires is None or expires <= time.monotonic():
            raise _error(401, "INVALID_SESSION_ID", SESSION_MESSAGE)

    def _issue_token(self, headers: Mapping[str, str], body: bytes) -> _Reply:
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
        now = time.monotonic()
        with self._lock:
            # Drop expired sessions so a long benchmark does not grow the table without bound.
            self._tokens = {t: expiry for t, expiry in self._tokens.items() if expiry > now}
            self._tokens[token] = now + ttl
        return _Reply(
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
    def _multiple_choices(kind: _SObjectType, matches: list[dict[str, Any]], base: str) -> _ApiError:
        # 300: the external ID is not unique; the body lists the matching records' URLs.
        return _ApiError(300, [f"{base}/sobjects/{kind.name}/{record['Id']}" for record in matches])

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

    def _get_by_id(self, kind: _SObjectType, record_id: str, base: str, query: str) -> _Reply:
        with self._lock:
            stored = self._records.get(kind.name, {})
            # A 15-character Id is the case-sensitive form of the 18-character one.
            record = next((r for key, r in stored.items() if key == record_id or key[:15] == record_id), None)
            record = dict(record) if record is not None else None
        if record is None:
            raise _not_found()
        return _Reply(200, self._view(kind, record, base, query))

    def _get_by_external_id(self, kind: _SObjectType, ext_field: str, value: str, base: str, query: str) -> _Reply:
        with self._lock:
            matches = [dict(record) for record in self._matching(kind, ext_field, value)]
        if not matches:
            raise _not_found()
        if len(matches) > 1:
            raise self._multiple_choices(kind, matches, base)
        return _Reply(200, self._view(kind, matches[0], base, query))

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
    ) -> _Reply:
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
                    return _Reply(204)
                return _Reply(200, {"id": record["Id"], "success": True, "errors": [], "created": False})
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
        return _Reply(201, result)

    @staticmethod
    def _required_missing(names: list[str]) -> _ApiError:
        return _error(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(names)}]", names)

    # -- control endpoints -------------------------------------------------------------------

    def _control(self, method: str, sub_path: str, query: str, body: bytes) -> _Reply:
        def invalid(message: str) -> _ApiError:
            return _error(400, "INVALID_SANDBOX_REQUEST", message)

        def payload() -> dict[str, Any]:
            if not body.strip():
                return {}
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                data = None
            if not isinstance(data, dict):
                raise invalid("the request body must be a JSON object")
            return data

        if sub_path == "/faults" and method == "POST":
            data = payload()
            try:
                self.inject(
                    str(data.get("kind")),
                    data.get("count", 1),
                    path_contains=data.get("path_contains"),
                    retry_after=data.get("retry_after"),
                    delay=data.get("delay"),
                )
            except ValueError as error:
                raise invalid(str(error)) from None
            return _Reply(200, {"queued": True})
        if sub_path == "/faults" and method == "DELETE":
            self.clear_faults()
            return _Reply(200, {"cleared": True})
        if sub_path == "/faults" and method == "GET":
            return _Reply(200, self.faults())
        if sub_path.startswith("/records/") and method == "GET":
            key = parse_qs(query).get("key", [None])[-1]
            try:
                return _Reply(200, self.records(unquote(sub_path[len("/records/") :]), key))
            except ValueError as error:
                raise invalid(str(error)) from None
        if sub_path == "/log" and method == "GET":
            return _Reply(200, self.requests_log())
        if sub_path == "/reset" and method == "POST":
            self.reset()
            return _Reply(200, {"reset": True})
        if sub_path == "/expire-tokens" and method == "POST":
            self.expire_tokens()
            return _Reply(200, {"expired": True})
        if sub_path == "/config" and method == "POST":
            try:
                self.configure(**payload())
            except ValueError as error:
                raise invalid(str(error)) from None
            return _Reply(200, self._public_config())
        if sub_path == "/config" and method == "GET":
            return _Reply(200, self._public_config())
        if sub_path == "/health" and method == "GET":
            return _Reply(200, {"ok": True})
        raise _not_found()

    def _public_config(self) -> dict[str, Any]:
        with self._lock:
            data = asdict(self.config)
        data.pop("client_secret")  # never echo a credential, even a sandbox one
        for name in ("known_fields", "external_id_fields"):
            if data[name] is not None:
                # JSON has no sets.
                data[name] = {sobject: sorted(names) for sobject, names in data[name].items()}
        return data

    def _log_line(self, method: str, path: str, status: int | str) -> None:
        if self.verbose:
            sys.stderr.write(f"[sf-sandbox] {method} {redact_path(path)} {status}\n")


def main(argv: list[str] | None = None) -> None:
    """Run the sandbox in the foreground: ``python -m integrations.salesforce.sandbox.server``."""
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
