"""The one transport layer: every call the hub makes to another system goes through here.

- ``request()`` sends one HTTP request, never following a redirect, and returns an ``Answer``: the
  status, at most ``max_bytes`` of the body, its size and the server's Retry-After. A network
  failure raises ``TransientError``; a request that cannot be sent as written, or that the session
  refused to send (``DestinationRefused``), raises ``PermanentError``.
- ``StatusPolicy`` and ``raise_for_status()``: which answers are failures, and of which kind. One
  table: 2xx succeed; 408, 425, 429 and 5xx are transient; redirects and every other status are
  permanent. A connector passes overrides for the answers its system means otherwise (Salesforce's
  403 ``REQUEST_LIMIT_EXCEEDED`` is a wait, not a refusal; Marketing Cloud's 429 without Retry-After
  waits a minute).
- ``parse_retry_after()``: the server's wait, as delay-seconds or an HTTP-date.
- ``CachedToken``: a system's OAuth access token, shared by every worker in its ``AccessToken`` row,
  fetched under that row's lock when it has expired and fetched again once when a call is refused
  with 401.
- ``CircuitBreaker``: the shared pause and circuit breaker of one system (Marketing Cloud, each
  downstream target), in its ``ConnectorState`` row.
- ``backoff_delay()``: capped exponential backoff with full jitter.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from integrations.metric_samples import observe
from integrations.models import AccessToken, ConnectorState

# Read no more of an answer than this unless the caller says otherwise: a server could send gigabytes.
DEFAULT_MAX_ANSWER_BYTES = 1024 * 1024
TRANSIENT_STATUSES = frozenset({408, 425, 429})  # and every 5xx
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
class TransportError(Exception):
    """A call to an external system failed; raise ``TransientError`` or ``PermanentError``.

    ``permanent`` errors (bad request, forbidden) will fail again unchanged and go straight to the
    dead-letter list; transient ones (throttling, 5xx, timeouts, resets) are retried later with
    backoff. ``retry_after`` is the minimum wait in seconds, when the server gave one (or the policy
    names one). ``detail`` is the system's error body as far as a connector keeps it (for Marketing
    Cloud ``message``, ``errorcode`` and any ``additionalErrors``), so a dead letter shows every cause
    the system named. ``response_bytes`` is the size of the answer, when there was one.
    """

    permanent = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        error_code: str = "",
        retry_after: float | None = None,
        detail: dict[str, Any] | None = None,
        response_bytes: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.error_code = error_code
        self.retry_after = retry_after
        self.detail = detail
        self.response_bytes = response_bytes


class TransientError(TransportError):
    """Worth trying again later: throttling, a 5xx, a timeout, a reset connection."""

    permanent = False


class PermanentError(TransportError):
    """Will fail the same way again: the request, the data or the configuration must change first."""

    permanent = True


class DestinationRefused(requests.RequestException):
    """The session would not send the request there (plain http, a non-public address): permanent."""


# ---------------------------------------------------------------------------
# One request
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """What came back: the status, at most ``limit`` bytes of the body, and the body's size.

    ``size`` is the number of bytes read, at most ``limit + 1``, which means "more than ``limit``".
    """

    status: int
    body: bytes = field(repr=False)
    size: int
    limit: int
    retry_after: float | None = None

    @property
    def truncated(self) -> bool:
        return self.size > self.limit

    def size_text(self) -> str:
        return f"(over {self.limit} bytes)" if self.truncated else f"({self.size} bytes)"

    def label(self, error_code: str = "") -> str:
        """`` NOT_FOUND (123 bytes)``: a known error code and the size, to follow the status in a message."""
        return f" {error_code} {self.size_text()}" if error_code else f" {self.size_text()}"

    def describe(self, error_code: str = "") -> str:
        """``404 NOT_FOUND (123 bytes)``: the status, a known error code, the size; never the body."""
        return f"{self.status}{self.label(error_code)}"

    def json(self) -> Any:
        """The body parsed as JSON; raises ValueError when it is not JSON (or was cut off)."""
        if self.truncated:
            raise ValueError("the answer was longer than what was read")
        return json.loads(self.body)


# Requests that cannot be sent as written: sending them again fails the same way.
_MALFORMED_REQUEST = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidJSONError,
    requests.exceptions.URLRequired,
)


def request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    timeout: float,
    system: str,
    what: str = "",
    max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    **kwargs: Any,
) -> Answer:
    """Send one request and read at most ``max_bytes`` of the answer; redirects are not followed.

    Whatever the status, the answer is returned (``raise_for_status`` judges it). ``what`` names the
    call in the error messages: ``PUT timed out after 15.0s``, ``connection failed: SSLError``.
    ``system`` (``marketing_cloud``, ``salesforce``, ``webhook``) labels the call's duration in
    ``hub_outbound_call_duration_seconds``, with its status or what kept it from having one.
    """
    prefix = f"{what} " if what else ""
    started = time.monotonic()
    outcome = "network_error"
    try:
        response = session.request(method, url, timeout=timeout, allow_redirects=False, stream=True, **kwargs)
        with response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    break
        outcome = str(response.status_code)
    except DestinationRefused as exc:
        outcome = "not_sent"
        raise PermanentError(str(exc)) from None
    except _MALFORMED_REQUEST as exc:
        outcome = "not_sent"
        raise PermanentError(f"{prefix}cannot be sent: {type(exc).__name__}") from None
    except requests.Timeout:
        outcome = "timeout"
        raise TransientError(f"{prefix}timed out after {timeout}s") from None
    except requests.RequestException as exc:
        raise TransientError(f"{prefix}connection failed: {type(exc).__name__}") from None
    finally:
        observe("outbound_call_seconds", [system, outcome], time.monotonic() - started)
    return Answer(
        status=response.status_code,
        body=b"".join(chunks)[:max_bytes],
        size=min(size, max_bytes + 1),
        limit=max_bytes,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as delay-seconds or an HTTP-date (RFC 9110 §10.2.3), in seconds from now."""
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


# ---------------------------------------------------------------------------
# The status policy
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What a failing answer means: ``permanent`` or not, and for a transient one the wait to use
    when the answer names none."""

    permanent: bool
    wait: float | None = None


TRANSIENT = Verdict(permanent=False)
PERMANENT = Verdict(permanent=True)


@dataclass(frozen=True)
class StatusPolicy:
    """The one table of which statuses are failures, with a connector's overrides.

    ``overrides`` maps a status, or a (status, error code) pair, to a ``Verdict``; the pair wins.
    """

    overrides: Mapping[int | tuple[int, str], Verdict] = field(default_factory=dict)

    def verdict(self, status: int, error_code: str = "") -> Verdict | None:
        """None for a success; else whether the failure is permanent, and the default wait."""
        if 200 <= status < 300:
            return None
        for key in ((status, error_code), status):
            if key in self.overrides:
                return self.overrides[key]
        if status in TRANSIENT_STATUSES or status >= 500:
            return TRANSIENT
        return PERMANENT


DEFAULT_POLICY = StatusPolicy()


def raise_for_status(
    answer: Answer,
    *,
    what: str,
    label: str = "",
    error_code: str = "",
    policy: StatusPolicy = DEFAULT_POLICY,
    retry_after: float | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Return when ``answer`` succeeded under ``policy``; else raise its failure.

    The message reads ``{what} answered 503{label}`` (transient), ``{what} refused with 400{label}``
    (permanent) or ``{what} answered 307{label}; redirects are not followed``. ``label`` is what the
    caller chose to show of the answer (its size, an error code, the system's message). The wait of
    a transient failure is ``retry_after`` if given, else the answer's Retry-After, else the
    policy's.
    """
    verdict = policy.verdict(answer.status, error_code)
    if verdict is None:
        return
    common: dict[str, Any] = {
        "http_status": answer.status,
        "error_code": error_code,
        "response_bytes": answer.size,
        "detail": detail,
    }
    if answer.status in REDIRECT_STATUSES:
        raise PermanentError(f"{what} answered {answer.status}{label}; redirects are not followed", **common)
    if verdict.permanent:
        raise PermanentError(f"{what} refused with {answer.status}{label}", **common)
    wait = next((w for w in (retry_after, answer.retry_after, verdict.wait) if w is not None), None)
    raise TransientError(f"{what} answered {answer.status}{label}", retry_after=wait, **common)


# ---------------------------------------------------------------------------
# Cached OAuth tokens
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FreshToken:
    """A token as the system's token endpoint issued it."""

    access_token: str
    lifetime: dt.timedelta
    instance_url: str = ""  # the REST base the answer named, when it names one


class CachedToken:
    """One system's OAuth access token, shared by every worker process through its ``AccessToken`` row.

    ``get()`` returns the stored token while it is valid (``margin`` before its expiry, so it never
    dies mid-call); else it locks the row and fetches a new one with ``fetch`` unless another worker
    did while this one waited, so concurrent workers fetch it once. ``call()`` sends with the token
    and, when the system refuses it with 401, drops that token and sends once more with a fresh one.
    """

    def __init__(self, system: str, fetch: Callable[[], FreshToken], *, margin: dt.timedelta = dt.timedelta(0)) -> None:
        self.system = system
        self.fetch = fetch
        self.margin = margin

    def _valid(self, token: AccessToken | None) -> bool:
        return bool(token and token.access_token and token.expires_at - self.margin > timezone.now())

    def get(self) -> AccessToken:
        token = AccessToken.objects.filter(system=self.system).first()
        if token is not None and self._valid(token):
            return token
        with transaction.atomic():
            AccessToken.objects.get_or_create(
                system=self.system, defaults={"access_token": "", "expires_at": timezone.now()}
            )
            row = AccessToken.objects.select_for_update().get(system=self.system)
            if self._valid(row):
                return row  # another worker fetched it while this one waited for the lock
            fresh = self.fetch()
            row.access_token = fresh.access_token
            row.rest_instance_url = fresh.instance_url
            row.fetched_at = timezone.now()
            row.expires_at = row.fetched_at + fresh.lifetime
            row.save()
            return row

    def invalidate(self, access_token: str) -> None:
        """Expire the token the system refused, only that one: another worker may hold a fresh one already."""
        AccessToken.objects.filter(system=self.system, access_token=access_token).update(
            expires_at=timezone.now() - dt.timedelta(days=1)
        )

    def call(self, send: Callable[[AccessToken], Answer]) -> Answer:
        """``send(token)``; when that answers 401, once more with a fresh token (a second 401 is returned)."""
        token = self.get()
        answer = send(token)
        if answer.status == 401:
            self.invalidate(token.access_token)
            answer = send(self.get())
        return answer


# ---------------------------------------------------------------------------
# The circuit breaker
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Gate:
    """Whether a call may go out now; if not, how long to wait and why."""

    allowed: bool
    wait: float = 0.0
    probe: bool = False
    reason: str = ""


class CircuitBreaker:
    """The shared pause and circuit breaker of one system, kept in its ``ConnectorState`` row (``key``).

    Every worker process of every host reads and writes the same row, so a 429 pauses all of them,
    and a run of failures opens one breaker for all of them (a per-process breaker would let N
    workers keep hammering a system that is down).

    - Pause: ``record_failure(..., pause_for=s)`` holds every call for ``s`` seconds (the system's
      Retry-After) without counting towards the breaker.
    - Breaker: ``threshold`` transient failures in a row open it for ``cooldown`` seconds, doubled
      each time it reopens, up to ``max_cooldown``. Then one call, the probe, goes out (half open):
      a success closes the breaker, a failure reopens it. A probe not reported back within
      ``probe_timeout`` (its worker died) lets another through.
    """

    def __init__(
        self,
        key: str,
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        max_cooldown: float = 600.0,
        probe_timeout: float = 60.0,
    ) -> None:
        self.key = key
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.probe_timeout = probe_timeout

    def _locked_state(self) -> ConnectorState:
        ConnectorState.objects.get_or_create(system=self.key)
        return ConnectorState.objects.select_for_update().get(system=self.key)

    def state(self) -> ConnectorState:
        """The stored state, or a closed one (not saved) when the system has not been called yet."""
        return ConnectorState.objects.filter(system=self.key).first() or ConnectorState(system=self.key)

    def check(self) -> Gate:
        now = timezone.now()
        with transaction.atomic():
            state = self._locked_state()
            if state.paused_until and state.paused_until > now:
                return Gate(False, (state.paused_until - now).total_seconds(), reason=f"paused: {state.pause_reason}")
            if state.breaker_state == ConnectorState.OPEN:
                if state.open_until and state.open_until > now:
                    return Gate(False, (state.open_until - now).total_seconds(), reason="circuit breaker open")
                state.breaker_state = ConnectorState.HALF_OPEN
                state.save(update_fields=["breaker_state", "updated_at"])
                return Gate(True, probe=True, reason="circuit breaker half open: probing")
            if state.breaker_state == ConnectorState.HALF_OPEN:
                if state.updated_at > now - dt.timedelta(seconds=self.probe_timeout):
                    return Gate(False, 5.0, reason="circuit breaker half open: a probe is in flight")
                state.save(update_fields=["updated_at"])
                return Gate(True, probe=True, reason="circuit breaker half open: probing again")
            return Gate(True)

    def record_success(self) -> None:
        """The system answered (2xx, or a refusal about our data): it is up, and the breaker closes.

        One UPDATE, as this runs after every successful call: in the closed state ``open_until`` is
        already unset and ``times_opened`` 0, so setting them again changes nothing.
        """
        now = timezone.now()
        closed = {
            "calls": F("calls") + 1,
            "consecutive_failures": 0,
            "last_success_at": now,
            "breaker_state": ConnectorState.CLOSED,
            "open_until": None,
            "times_opened": 0,
            "updated_at": now,
        }
        if not ConnectorState.objects.filter(system=self.key).update(**closed):
            ConnectorState.objects.get_or_create(system=self.key)
            ConnectorState.objects.filter(system=self.key).update(**closed)

    def record_failure(
        self, error: str, *, trips_breaker: bool = True, pause_for: float | None = None
    ) -> ConnectorState:
        """A failure: ``trips_breaker`` counts it towards the breaker, ``pause_for`` seconds pause
        every call (throttling); with neither, only the error is noted. Returns the new state."""
        now = timezone.now()
        with transaction.atomic():
            state = self._locked_state()
            state.calls += 1
            state.last_error = error[:2000]
            state.last_failure_at = now
            if pause_for:
                until = now + dt.timedelta(seconds=pause_for)
                if not state.paused_until or until > state.paused_until:
                    state.paused_until = until
                    state.pause_reason = error[:300]
            if trips_breaker:
                state.consecutive_failures += 1
                if state.breaker_state == ConnectorState.HALF_OPEN or state.consecutive_failures >= self.threshold:
                    state.times_opened += 1
                    cooldown = min(self.max_cooldown, self.cooldown * 2 ** (state.times_opened - 1))
                    state.breaker_state = ConnectorState.OPEN
                    state.opened_at = now
                    state.open_until = now + dt.timedelta(seconds=cooldown)
            state.save()
            return state

    def close(self) -> None:
        """Close the breaker and lift the pause now (a steward's decision in the admin)."""
        ConnectorState.objects.filter(system=self.key).update(
            breaker_state=ConnectorState.CLOSED,
            consecutive_failures=0,
            open_until=None,
            times_opened=0,
            paused_until=None,
            pause_reason="",
            updated_at=timezone.now(),
        )

    def describe(self) -> dict[str, object]:
        state = ConnectorState.objects.filter(system=self.key).first()
        if state is None:
            return {"system": self.key, "breaker": ConnectorState.CLOSED, "pausedUntil": None}
        now = timezone.now()
        return {
            "system": self.key,
            "breaker": state.breaker_state,
            "consecutiveFailures": state.consecutive_failures,
            "openUntil": state.open_until.isoformat() if state.open_until and state.open_until > now else None,
            "pausedUntil": state.paused_until.isoformat() if state.paused_until and state.paused_until > now else None,
            "lastSuccessAt": state.last_success_at.isoformat() if state.last_success_at else None,
            "lastError": state.last_error or None,
        }


def backoff_delay(attempt: int, *, base: float = 2.0, cap: float = 300.0, floor: float = 0.0) -> float:
    """Capped exponential backoff with full jitter, never shorter than ``floor``.

    attempt 1 -> up to 2 s, 2 -> up to 4 s, ... capped at ``cap``; ``floor`` is the
    server's Retry-After, which the delay must honour.
    """
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return max(floor, random.uniform(0, ceiling))
