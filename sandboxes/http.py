"""The HTTP plumbing the local emulators of external systems (Marketing Cloud, Salesforce) share.

Each emulator answers its system's endpoints with that system's shapes; what they have in common
lives here: binding and serving a threaded HTTP server, reading request bodies defensively,
writing JSON replies, dropping connections on purpose, a FIFO of injected faults, latency and
random failures, the request log, the issued-token table and the ``/__sandbox/`` control
endpoints every emulator offers.

Like the emulators, it imports nothing from Django (only the standard library): tests, benchmarks
and ``make run`` start them as plain libraries, in processes that may never set Django up.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "CONTROL_ROOT",
    "ApiError",
    "EmulatorConfig",
    "EmulatorHandler",
    "EmulatorServer",
    "Fault",
    "Reply",
]

CONTROL_ROOT = "/__sandbox"
# A request body larger than this is refused rather than buffered, so a runaway client cannot
# exhaust memory on a developer machine.
MAX_BODY_BYTES = 16 * 1024 * 1024
# How long a "timeout" fault stalls when it names no delay: longer than any client should wait.
DEFAULT_TIMEOUT_DELAY = 30.0


class EmulatorConfig(Protocol):
    """The config fields :class:`EmulatorServer` itself relies on; each emulator's dataclass has more."""

    # Present on every dataclass: asdict() and fields() need it, and so does the public config view.
    __dataclass_fields__: ClassVar[dict[str, Any]]
    client_secret: str
    latency_ms: int
    fail_rate: float
    seed: int | None


ConfigT = TypeVar("ConfigT", bound=EmulatorConfig)


@dataclass
class Reply:
    """An emulator's answer: a status, a JSON-able body (None for an empty one) and extra headers.

    ``raw`` is a body sent as it is instead, with its own ``content_type`` (a SOAP envelope).
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # drop the connection without answering
    raw: bytes | None = None
    content_type: str | None = None


class ApiError(Exception):
    """Raised inside request handling to short-circuit into an error reply."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.reply = Reply(status, body, headers or {})


@dataclass
class Fault:
    """One queued fault; its fields are what :meth:`EmulatorServer.faults` reports."""

    kind: str
    count: int
    path_contains: str | None
    retry_after: int | None
    delay: float | None

    def matches(self, path: str, target: str, token_path: str) -> bool:
        """Whether a request for ``target`` (``path`` plus query string) should get this fault."""
        # Faults without a path filter are meant for data calls: breaking the token endpoint too
        # would stop the client from recovering, so that only happens when asked for by path.
        if self.path_contains is None:
            return path != token_path
        # The filter sees the query string too, so e.g. one page of a paged read can be broken.
        return self.path_contains in target


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when a benchmark opens many at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer[Any]) -> None:
        self.emulator = emulator
        super().__init__(address, EmulatorHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-response are expected here (fault injection makes
        # them on purpose), so tracebacks are only worth printing when asked for.
        if self.emulator.verbose:
            super().handle_error(request, client_address)


class EmulatorHandler(BaseHTTPRequestHandler):
    """Reads each request and hands it to the server's emulator; writes what the emulator answers.

    What differs between systems (server name, Content-Type spelling, error bodies) is asked of
    the emulator, so one handler class serves them all.
    """

    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections are closed after this, so their threads do not linger.
    timeout = 60
    # Headers and body go out in two writes; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK (~40 ms per keep-alive request), which would swamp any latency setting.
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        # The Server header names the emulated system, as the stdlib would with server_version.
        return f"{self.server.emulator.server_version} {self.sys_version}"

    # BaseHTTPRequestHandler dispatches on do_<METHOD>; every method goes through one router so
    # that a wrong method on a known path gets the system's own 405 instead of a stdlib 501.
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
        emulator = self.server.emulator
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            # Every client the hub uses sends Content-Length; chunked bodies are not worth emulating.
            self.close_connection = True
            self._write(emulator._unreadable_body_reply(411, "Length Required"))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._write(emulator._unreadable_body_reply(413, "Invalid Content-Length"))
            return
        body = self.rfile.read(length) if length else b""
        reply = emulator.handle(self.command, self.path, self.headers, body)
        if reply.reset:
            self._reset_connection()
        else:
            self._write(reply)

    def _write(self, reply: Reply) -> None:
        emulator = self.server.emulator
        if reply.raw is not None:
            payload = reply.raw
        else:
            payload = b"" if reply.body is None else json.dumps(reply.body).encode("utf-8")
        try:
            self.send_response(reply.status)
            if reply.raw is not None:
                self.send_header("Content-Type", reply.content_type or emulator.content_type)
            elif reply.body is not None or emulator.content_type_without_body:
                self.send_header("Content-Type", emulator.content_type)
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
        self.server.emulator._log_line(self.command, self.path, 0)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.emulator._log_line(self.command, self.path, code)

    def log_message(self, format: str, *args: Any) -> None:
        # The base class would print the raw request line, which can carry an email address (a
        # key value in the path), so only numbers (status codes) are kept from the arguments.
        emulator = self.server.emulator
        if not emulator.verbose:
            return
        try:
            text = format % tuple(arg if isinstance(arg, int) else "..." for arg in args)
        except (TypeError, ValueError):
            text = format.split("%", 1)[0].strip()
        sys.stderr.write(f"[{emulator.name}] {text}\n")


class EmulatorServer(ABC, Generic[ConfigT]):
    """A threaded HTTP server answering like an external system, with switches to make it misbehave.

    The socket is bound in the constructor, so :attr:`url` is known (also with ``port=0``) before
    :meth:`start` or :meth:`serve_forever` is called. Subclasses set the class attributes below and
    implement the hooks: routing, fault replies and error bodies are the system's own.
    """

    # Names the serving thread and prefixes verbose log lines, e.g. "mc-sandbox".
    name: ClassVar[str]
    # The Server header's product token, e.g. "MarketingCloudSandbox/1.0".
    server_version: ClassVar[str]
    # The OAuth token endpoint: spared by faults without a path filter and by random failures.
    token_path: ClassVar[str]
    fault_kinds: ClassVar[frozenset[str]]
    # The config dataclass: built when none is given, and the fields configure() accepts.
    config_class: ClassVar[type[Any]]
    # The Content-Type of every JSON reply, spelt as the emulated system spells it.
    content_type: ClassVar[str]
    # Whether a reply without a body names a Content-Type all the same (some systems do).
    content_type_without_body: ClassVar[bool]

    def __init__(self, host: str, port: int, config: ConfigT | None, *, verbose: bool) -> None:
        self.config: ConfigT = config or self.config_class()
        # What reset() goes back to: run-time configure() changes (a fail rate, latency) end with it.
        self._initial_config: ConfigT = replace(self.config)
        self.verbose = verbose
        self._lock = threading.Lock()
        self._random = random.Random(self.config.seed)
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._faults: list[Fault] = []
        self._log: list[dict[str, Any]] = []
        # Bumped by reset(): a request that arrived before a reset is answered but not logged after it.
        self._generation = 0
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
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
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
        """Queue a fault answered by the next ``count`` matching requests (see ``fault_kinds``).

        Faults are used first in, first out. Without ``path_contains`` a fault matches any call but
        the token request; with it, any call whose path and query string contain it. ``retry_after``
        is the Retry-After a throttling or unavailable fault announces; ``delay`` is how long a
        "timeout" stalls before answering normally (default 30 s).
        """
        if kind not in self.fault_kinds:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(self.fault_kinds)}")
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
            self._faults.append(Fault(kind, count, path_contains, retry_after, delay))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        """The faults still queued, in the order they will be used."""
        with self._lock:
            return [asdict(fault) for fault in self._faults]

    def configure(self, **changes: Any) -> None:
        """Change config fields at run time, e.g. ``configure(latency_ms=50, fail_rate=0.1)``."""
        known = {item.name for item in fields(self.config_class)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        # Check everything before changing anything, so a bad value leaves the config as it was.
        checked = {name: self._checked_config_value(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self.config, name, value)
            if "seed" in checked:
                self._random.seed(checked["seed"])

    def expire_tokens(self) -> None:
        """End every session, as an admin revoking them (or the token lifetime running out) would."""
        with self._lock:
            self._tokens.clear()

    def requests_log(self) -> list[dict[str, Any]]:
        """Calls to the emulated API as ``{"method", "path", "status", "time"}``; key values are masked.

        ``status`` is 0 for a connection reset on purpose; ``time`` is the Unix time it was
        answered. Request and response bodies are never recorded: they hold personal data.
        Control calls (``/__sandbox/...``) are not logged.
        """
        with self._lock:
            return [dict(entry) for entry in self._log]

    def count(self, method: str, path_prefix: str) -> int:
        """How many logged calls used ``method`` on a (masked) path starting with ``path_prefix``."""
        method = method.upper()
        with self._lock:
            return sum(1 for e in self._log if e["method"] == method and e["path"].startswith(path_prefix))

    def reset(self) -> None:
        """Forget the data, the issued tokens, the queued faults, the log and run-time config changes."""
        with self._lock:
            self.config = replace(self._initial_config)
            self._random.seed(self.config.seed)
            self._tokens.clear()
            self._faults.clear()
            self._log.clear()
            self._generation += 1
            self._reset_state()

    # -- request handling --------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request; called by the HTTP handler from its own thread."""
        split = urlsplit(target)
        path = split.path
        if path == CONTROL_ROOT or path.startswith(CONTROL_ROOT + "/"):
            try:
                return self._control(method, path[len(CONTROL_ROOT) :], split.query, body)
            except ApiError as error:
                return error.reply
        with self._lock:
            generation = self._generation
        reply = self._misbehave_or_route(method, target, headers, body)
        with self._lock:
            # A slow answer to an earlier test's call (its client gave up long ago) is not this one's.
            if generation == self._generation:
                self._log.append(
                    {"method": method, "path": self._redact(path), "status": reply.status, "time": time.time()}
                )
        return reply

    def _misbehave_or_route(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
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
        if path != self.token_path and self._random_failure():
            return self._random_failure_reply()
        try:
            return self._route(method, path, split.query, headers, body)
        except ApiError as error:
            return error.reply

    def _take_fault(self, path: str, target: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.count > 0 and fault.matches(path, target, self.token_path):
                    fault.count -= 1
                    if fault.count == 0:
                        del self._faults[index]
                    return fault
        return None

    def _random_failure(self) -> bool:
        with self._lock:
            rate = self.config.fail_rate
            return rate > 0 and self._random.random() < rate

    def _remember_token(self, token: str, ttl: float) -> None:
        """Record a newly issued token as valid for ``ttl`` seconds."""
        now = time.monotonic()
        with self._lock:
            # Drop expired tokens so a long benchmark does not grow the table without bound.
            self._tokens = {t: expiry for t, expiry in self._tokens.items() if expiry > now}
            self._tokens[token] = now + ttl

    def _token_is_live(self, token: str) -> bool:
        with self._lock:
            expires = self._tokens.get(token) if token else None
        return expires is not None and expires > time.monotonic()

    # -- control endpoints -------------------------------------------------------------------

    def _control(self, method: str, sub_path: str, query: str, body: bytes) -> Reply:
        """Answer a call below ``/__sandbox``: the endpoints every emulator has, then its own."""
        if sub_path == "/faults" and method == "POST":
            data = self._control_payload(body)
            try:
                self.inject(
                    str(data.get("kind")),
                    data.get("count", 1),
                    path_contains=data.get("path_contains"),
                    retry_after=data.get("retry_after"),
                    delay=data.get("delay"),
                )
            except ValueError as error:
                raise self._control_error(str(error)) from None
            return Reply(200, {"queued": True})
        if sub_path == "/faults" and method == "DELETE":
            self.clear_faults()
            return Reply(200, {"cleared": True})
        if sub_path == "/faults" and method == "GET":
            return Reply(200, self.faults())
        if sub_path == "/log" and method == "GET":
            return Reply(200, self.requests_log())
        if sub_path == "/reset" and method == "POST":
            self.reset()
            return Reply(200, {"reset": True})
        if sub_path == "/expire-tokens" and method == "POST":
            self.expire_tokens()
            return Reply(200, {"expired": True})
        if sub_path == "/config" and method == "POST":
            try:
                self.configure(**self._control_payload(body))
            except ValueError as error:
                raise self._control_error(str(error)) from None
            return Reply(200, self._public_config())
        if sub_path == "/config" and method == "GET":
            return Reply(200, self._public_config())
        if sub_path == "/health" and method == "GET":
            return Reply(200, {"ok": True})
        return self._system_control(method, sub_path, query, body)

    def _public_config(self) -> dict[str, Any]:
        with self._lock:
            data = asdict(self.config)
        data.pop("client_secret")  # never echo a credential, even a sandbox one
        return data

    def _checked_config_value(self, name: str, value: Any) -> Any:
        """Return the value to store for config field ``name``, or raise ValueError saying what is wrong.

        This checks the knobs every emulator has; subclasses check their own fields first.
        """
        if name == "latency_ms":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        elif name == "fail_rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError("fail_rate must be between 0 and 1")
        elif name == "seed" and value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("seed must be an integer or null")
        return value

    def _log_line(self, method: str, path: str, status: int | str) -> None:
        if self.verbose:
            sys.stderr.write(f"[{self.name}] {method} {self._redact(path)} {status}\n")

    # -- hooks: what each emulated system answers in its own way ------------------------------

    @abstractmethod
    def _route(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer a call to the emulated API once latency, faults and random failures are past."""

    @abstractmethod
    def _fault_reply(self, fault: Fault, path: str) -> Reply:
        """The reply for an injected fault of any kind but "timeout"."""

    @abstractmethod
    def _random_failure_reply(self) -> Reply:
        """The reply when ``fail_rate`` picks a call to fail: the system's internal server error."""

    @abstractmethod
    def _unreadable_body_reply(self, status: int, message: str) -> Reply:
        """The reply when the body cannot be read: 411 for a chunked body, 413 for a bad length."""

    @abstractmethod
    def _redact(self, path: str) -> str:
        """``path`` safe to log: key values that may be personal data masked."""

    @abstractmethod
    def _reset_state(self) -> None:
        """Forget the emulated system's own data; called by :meth:`reset` with the lock held."""

    @abstractmethod
    def _control_payload(self, body: bytes) -> dict[str, Any]:
        """A control call's JSON object body ({} when empty), or raise the system's ApiError."""

    @abstractmethod
    def _control_error(self, message: str) -> ApiError:
        """The error for a control call with an invalid value, saying what is wrong."""

    @abstractmethod
    def _system_control(self, method: str, sub_path: str, query: str, body: bytes) -> Reply:
        """Answer the emulator's own control endpoints, or raise its 404 for an unknown one."""
