"""A local HTTP emulator of the Salesforce Marketing Cloud endpoints the hub talks to.

The hub is developed and tested without a real Marketing Cloud tenant, so this module answers the
auth (``/v2/token``) and data extension REST calls with the same request and error shapes as SFMC,
and adds switches for latency and injected failures so retry and back-off code can be exercised.

It deliberately imports nothing from Django: tests, benchmarks and ``make run`` start it as a plain
library or through the ``mc_sandbox`` management command, and other processes drive it over the
``/__sandbox/`` control endpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = ["FAULT_KINDS", "MarketingCloudSandbox", "SandboxConfig"]

DOCS_URL = "https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm"
OAUTH_ERROR_URI = "https://developer.salesforce.com"
TOKEN_SCOPE = "data_extensions_read data_extensions_write list_and_subscribers_read"
TOKEN_PATH = "/v2/token"
CONTROL_ROOT = "/__sandbox"
FAULT_KINDS = frozenset({"429", "429-blocked", "500", "503", "400", "403", "401", "timeout", "reset"})

# SFMC caps the GET rowset page size at 2500 and uses that when none is asked for.
MAX_PAGE_SIZE = 2500
# A request body larger than this is refused rather than buffered, so a runaway client cannot
# exhaust memory on a developer machine.
MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT_DELAY = 30.0
DEFAULT_RETRY_AFTER = 5

_ROW_PATH = re.compile(r"^/hub/v1/dataevents/key:([^/]+)/rows/([^/]+)$")
_ROWSET_PATH = re.compile(r"^/hub/v1/dataevents/key:([^/]+)/rowset$")
_QUERY_PATH = re.compile(r"^/data/v1/customobjectdata/key/([^/]+)/rowset$")
# The primary key value in a row path is usually a subscriber key or an email address: it is
# replaced before anything is logged so personal data never reaches a log.
_ROW_VALUE_IN_PATH = re.compile(r"(/rows/[^/]*?(?::|%3[aA]))[^/]*")
_FILTER_CLAUSE = re.compile(r"\s*([A-Za-z_][\w]*)\s+(eq|ne|gt|ge|lt|le)\s+'((?:[^']|'')*)'\s*", re.IGNORECASE)
_FILTER_AND = re.compile(r"and\b", re.IGNORECASE)
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


@dataclass
class _Fault:
    kind: str
    count: int
    path_contains: str | None
    retry_after: int | None
    delay: float | None

    def matches(self, path: str) -> bool:
        # Faults without a path filter are meant for the data calls; the token endpoint is only
        # broken on purpose, otherwise a generic fault would also stop the client from recovering.
        if self.path_contains is None:
            return path != TOKEN_PATH
        return self.path_contains in path


@dataclass
class _DataExtension:
    key_columns: tuple[str, ...]
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Insertion-ordered, as the GET rowset pages through rows in the order they were created.
    rows: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # drop the connection without answering


class _ApiError(Exception):
    """Raised inside request handling to short-circuit into an error reply."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.reply = _Reply(status, body, headers or {})


def _rest_error(status: int, errorcode: int, message: str, documentation: str = DOCS_URL) -> _ApiError:
    return _ApiError(status, {"message": message, "errorcode": errorcode, "documentation": documentation})


def _oauth_error(status: int, error: str, description: str) -> _Reply:
    return _Reply(status, {"error": error, "error_description": description, "error_uri": OAUTH_ERROR_URI})


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when a benchmark opens many at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: MarketingCloudSandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-response are expected here (fault injection makes
        # them on purpose), so tracebacks are only worth printing when asked for.
        if self.sandbox.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MarketingCloudSandbox/1.0"
    # Idle keep-alive connections are closed after this, so their threads do not linger.
    timeout = 60
    # Headers and body go out in two writes; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK (~40 ms per keep-alive request), which would swamp any latency setting.
    disable_nagle_algorithm = True
    server: _Server

    # BaseHTTPRequestHandler dispatches on do_<METHOD>; every method goes through one router so
    # that a wrong method on a known path can be answered with SFMC's 405 instead of a stdlib 501.
    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        sandbox = self.server.sandbox
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            # Every client the hub uses sends Content-Length; chunked bodies are not worth emulating.
            self.close_connection = True
            self._write(_Reply(411, {"message": "Length Required", "errorcode": 411, "documentation": ""}))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._write(_Reply(413, {"message": "Invalid Content-Length", "errorcode": 413, "documentation": ""}))
            return
        body = self.rfile.read(length) if length else b""
        reply = sandbox.handle(self.command, self.path, self.headers, body)
        if reply.reset:
            self._reset_connection()
        else:
            self._write(reply)

    def _write(self, reply: _Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode("utf-8")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
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
        # balancer looks like to the client: a reset, not a clean "server closed" end of stream.
        self.close_connection = True
        # Best effort: without the option the client still sees the connection drop, just via FIN.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # detach() + os.close() closes the descriptor now; socket.close() would wait for rfile.
        os.close(self.connection.detach())
        self.server.sandbox._log_line(self.command, self.path, 0)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.sandbox._log_line(self.command, self.path, code)

    def log_message(self, format: str, *args: Any) -> None:
        # The base class would print the raw request line, which can carry an email address, so
        # only numbers (status codes) are kept from the arguments.
        if not self.server.sandbox.verbose:
            return
        try:
            text = format % tuple(arg if isinstance(arg, int) else "..." for arg in args)
        except (TypeError, ValueError):
            text = format.split("%", 1)[0].strip()
        sys.stderr.write(f"[mc-sandbox] {text}\n")


class MarketingCloudSandbox:
    """A threaded HTTP server answering like SFMC's auth and REST endpoints.

    The socket is bound in the constructor, so :attr:`url` is known (also with ``port=0``) before
    :meth:`start` or :meth:`serve_forever` is called.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        self.config = config or SandboxConfig()
        self.verbose = verbose
        self._lock = threading.Lock()
        self._random = random.Random(self.config.seed)
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._faults: list[_Fault] = []
        self._des: dict[str, _DataExtension] = {}
        self._log: list[dict[str, Any]] = []
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

    def start(self) -> MarketingCloudSandbox:
        """Serve from a daemon thread and return self."""
        if self._thread is not None:
            return self
        self._serving = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="mc-sandbox", daemon=True
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
        """Queue a fault answered by the next ``count`` matching requests (see FAULT_KINDS)."""
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
        known = {f.name for f in fields(SandboxConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        for name, value in changes.items():
            if name in ("client_id", "client_secret", "account_id"):
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a string")
            elif name in ("token_ttl", "latency_ms"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be a non-negative integer")
            elif name == "fail_rate":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise ValueError("fail_rate must be between 0 and 1")
            elif name == "seed" and value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError("seed must be an integer or null")
        with self._lock:
            for name, value in changes.items():
                setattr(self.config, name, value)
            if "seed" in changes:
                self._random.seed(changes["seed"])

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def rows(self, de_key: str) -> dict[str, dict[str, str]]:
        """Primary key value (several key columns joined with "|") -> copy of the stored row."""
        with self._lock:
            de = self._des.get(de_key)
            return {} if de is None else {pk: dict(row) for pk, row in de.rows.items()}

    def requests_log(self) -> list[dict[str, Any]]:
        """MC endpoint calls as ``{"method", "path", "status", "time"}``; row key values are masked.

        ``status`` is 0 for a connection reset on purpose; ``time`` is the Unix time it was answered.
        """
        with self._lock:
            return [dict(entry) for entry in self._log]

    def count(self, method: str, path_prefix: str) -> int:
        method = method.upper()
        with self._lock:
            return sum(1 for e in self._log if e["method"] == method and e["path"].startswith(path_prefix))

    def reset(self) -> None:
        with self._lock:
            self._des.clear()
            self._tokens.clear()
            self._faults.clear()
            self._log.clear()

    # -- request handling --------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        """Answer one request; called by the HTTP handler from its own thread."""
        path = urlsplit(target).path
        if path == CONTROL_ROOT or path.startswith(CONTROL_ROOT + "/"):
            try:
                return self._control(method, path[len(CONTROL_ROOT) :], body)
            except _ApiError as error:
                return error.reply
        reply = self._marketing_cloud(method, target, headers, body)
        with self._lock:
            self._log.append({"method": method, "path": redact_path(path), "status": reply.status, "time": time.time()})
        return reply

    def _marketing_cloud(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        split = urlsplit(target)
        path = split.path
        with self._lock:
            latency = self.config.latency_ms
        if latency > 0:
            self._stopping.wait(latency / 1000)
        fault = self._take_fault(path)
        if fault is not None:
            if fault.kind == "timeout":
                # The client is expected to give up first; if it doesn't, it gets a normal answer.
                self._stopping.wait(DEFAULT_TIMEOUT_DELAY if fault.delay is None else fault.delay)
            else:
                return self._fault_reply(fault)
        if path != TOKEN_PATH and self._random_failure():
            return _rest_error(500, 50000, "Internal Server Error").reply
        try:
            return self._route(method, path, split.query, headers, body)
        except _ApiError as error:
            return error.reply

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.count > 0 and fault.matches(path):
                    fault.count -= 1
                    if fault.count == 0:
                        del self._faults[index]
                    return fault
        return None

    def _random_failure(self) -> bool:
        with self._lock:
            rate = self.config.fail_rate
            return rate > 0 and self._random.random() < rate

    def _fault_reply(self, fault: _Fault) -> _Reply:
        kind = fault.kind
        if kind == "429":
            wait = DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after
            body = {"message": "Rate limit exceeded", "errorcode": 50100, "retryAfter": wait, "documentation": DOCS_URL}
            return _Reply(429, body, {"Retry-After": str(wait)})
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
        return _Reply(0, reset=True)  # "reset"

    def _route(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        routes: list[tuple[re.Pattern[str] | str, dict[str, Callable[..., _Reply]]]] = [
            (TOKEN_PATH, {"POST": lambda m: self._issue_token(body)}),
            (_ROW_PATH, {"PUT": lambda m: self._put_row(m, body)}),
            (_ROWSET_PATH, {"POST": lambda m: self._post_rowset(m, body)}),
            (_QUERY_PATH, {"GET": lambda m: self._get_rowset(m, path, query)}),
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
        token = token.strip()
        with self._lock:
            expires = self._tokens.get(token) if scheme.lower() == "bearer" and token else None
        if expires is None or expires <= time.monotonic():
            raise _rest_error(401, 0, "Not Authorized")

    def _issue_token(self, body: bytes) -> _Reply:
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
        now = time.monotonic()
        with self._lock:
            # Drop expired tokens so a long benchmark does not grow the table without bound.
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + config.token_ttl
        base = self.url + "/"
        return _Reply(
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

    def _put_row(self, match: re.Match[str], body: bytes) -> _Reply:
        de_key = unquote(match.group(1))
        # Split on the first colon after decoding, so a %3A-encoded separator works as well.
        pk_name, sep, pk_value = unquote(match.group(2)).partition(":")
        if not sep or not pk_name or not pk_value:
            raise _rest_error(400, 10005, "Invalid value")
        values = _checked_values(_parse_json(body))
        row = self._upsert(de_key, {pk_name: pk_value}, values)
        return _Reply(200, {"keys": {pk_name: pk_value}, "values": row})

    def _post_rowset(self, match: re.Match[str], body: bytes) -> _Reply:
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
        return _Reply(200, items)

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

    def _get_rowset(self, match: re.Match[str], path: str, query: str) -> _Reply:
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
        return _Reply(
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

    # -- control endpoints -------------------------------------------------------------------

    def _control(self, method: str, sub_path: str, body: bytes) -> _Reply:
        def payload() -> dict[str, Any]:
            data = _parse_json(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise _rest_error(400, 10004, "Invalid message format", "")
            return data

        def invalid(error: Exception) -> _ApiError:
            return _rest_error(400, 10005, str(error), "")

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
                raise invalid(error) from None
            return _Reply(200, {"queued": True})
        if sub_path == "/faults" and method == "DELETE":
            self.clear_faults()
            return _Reply(200, {"cleared": True})
        if sub_path == "/faults" and method == "GET":
            return _Reply(200, self.faults())
        if sub_path.startswith("/rows/") and method == "GET":
            return _Reply(200, self.rows(unquote(sub_path[len("/rows/") :])))
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
                raise invalid(error) from None
            return _Reply(200, self._public_config())
        if sub_path == "/config" and method == "GET":
            return _Reply(200, self._public_config())
        if sub_path == "/health" and method == "GET":
            return _Reply(200, {"ok": True})
        raise _rest_error(404, 404, "Not Found", "")

    def _public_config(self) -> dict[str, Any]:
        with self._lock:
            data = asdict(self.config)
        data.pop("client_secret")  # never echo a credential, even a sandbox one
        return data

    def _log_line(self, method: str, path: str, status: int | str) -> None:
        if self.verbose:
            sys.stderr.write(f"[mc-sandbox] {method} {redact_path(path)} {status}\n")
