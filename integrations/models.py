"""Inbound events, sync runs and their step logs, dead letters, API keys, tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from auditlog.registry import auditlog
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from integrations.choices import (
    PENDING_EVENT_STATUSES,
    RESERVED_SOURCES,
    SYSTEM_CODE,
    ApiScope,
    EventChannel,
    EventStatus,
    RunStatus,
    RunTrigger,
    StepOutcome,
)


def validate_sendable_source(code: str) -> None:
    """A source system an API key may be bound to: a system code, and not one of the reserved ones."""
    if not SYSTEM_CODE.match(code):
        raise ValidationError(f"{code!r} is not a system code (capitals, digits and _; e.g. POS, B2C_COMMERCE)")
    if code in RESERVED_SOURCES:
        raise ValidationError(f"{code} is reserved: it reaches the hub only through its own channel, never by API key")


class ApiClient(models.Model):
    """A system allowed to call the hub's API; the key itself is only stored hashed.

    ``sources`` are the source systems the key may send events for on ``/api/v1/events``:
    an event naming any other source is refused with 403.
    """

    name = models.CharField(max_length=80, unique=True)
    key_prefix = models.CharField(max_length=12, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(models.CharField(max_length=10, choices=ApiScope.choices), default=list)
    sources = ArrayField(
        models.CharField(max_length=40, validators=[validate_sendable_source]),
        default=list,
        blank=True,
        help_text="Source systems this key may send events for (comma-separated system codes, e.g. POS,B2C_COMMERCE).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def hash_key(key: str) -> str:
        # Keys are 256-bit random strings, so a fast hash is enough (no dictionary to guess from).
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, name: str, scopes: list[str], sources: list[str] | tuple[str, ...] = ()) -> tuple[ApiClient, str]:
        """A new key (returned once, never stored) bound to ``scopes`` and ``sources``; ValidationError if invalid."""
        for code in sources:
            validate_sendable_source(code)
        prefix = secrets.token_hex(4)
        key = f"hub_{prefix}_{secrets.token_urlsafe(32)}"
        client = cls.objects.create(
            name=name, key_prefix=prefix, key_hash=cls.hash_key(key), scopes=scopes, sources=sorted(set(sources))
        )
        return client, key

    def may_send(self, source: str) -> bool:
        return source in (self.sources or []) and source not in RESERVED_SOURCES

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class InboundEvent(models.Model):
    """An event as it arrived, stored before anything else happens to it; also its own queue entry.

    The resolver claims ready events (pending status, ``visible_at`` passed) with ``FOR UPDATE
    SKIP LOCKED``: a claim sets ``processing``, a lease (``visible_at`` in the future) and
    ``claimed_by``; a failure sets ``retrying`` with the backoff as ``visible_at``. A claim
    whose worker died becomes visible again when its lease ends.
    """

    channel = models.CharField(max_length=16, choices=EventChannel.choices)
    system = models.CharField(max_length=40, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    # Unique (a constraint below): a repeated delivery finds its first copy and changes nothing.
    idempotency_key = models.CharField(max_length=200)
    status = models.CharField(max_length=12, choices=EventStatus.choices, default=EventStatus.QUEUED)
    reason = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    occurred_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    raw_body = models.BinaryField(editable=False)
    # The decoded envelope (JWT claims, API event) and the CIM Individual mapped from it.
    payload = models.JSONField(null=True, blank=True)
    individual_cim = models.JSONField(null=True, blank=True)
    api_client = models.ForeignKey(ApiClient, on_delete=models.SET_NULL, null=True, blank=True)
    master_id = models.CharField(max_length=36, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # The queue: when the event may be claimed (now, after a backoff, or when a claim's lease ends).
    visible_at = models.DateTimeField(default=timezone.now)
    # The claim holding the event: "<HUB_INSTANCE_NAME>:<pid>:<claim uuid>", '' when none.
    claimed_by = models.CharField(max_length=128, blank=True)

    class Meta:
        verbose_name = "inbound event"
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["idempotency_key"], name="event_idempotency_key_unique")]
        indexes = [
            models.Index(fields=["status", "received_at"], name="event_status_idx"),
            models.Index(fields=["system", "external_id"], name="event_source_record_idx"),
            models.Index(fields=["received_at"], name="event_received_idx"),
            # Only events still queued are in these two, so the claim stays cheap however many are done.
            models.Index(fields=["id"], condition=models.Q(status__in=PENDING_EVENT_STATUSES), name="event_queue_idx"),
            models.Index(
                fields=["system", "external_id", "id"],
                condition=models.Q(status__in=PENDING_EVENT_STATUSES),
                name="event_queue_source_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"event {self.pk} ({self.system}:{self.external_id})"


class SyncRun(models.Model):
    """One pass of the Customers process (or a re-sync / replay), with its step log."""

    event = models.ForeignKey(InboundEvent, on_delete=models.CASCADE, null=True, blank=True, related_name="runs")
    trigger = models.CharField(max_length=8, choices=RunTrigger.choices, default=RunTrigger.EVENT)
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.RUNNING)
    system = models.CharField(max_length=40, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    master_id = models.CharField(max_length=36, blank=True, db_index=True)
    match_rule = models.CharField(max_length=120, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    writeback_attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    actor = models.CharField(max_length=120, blank=True)

    class Meta:
        verbose_name = "sync run"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "started_at"], name="run_status_idx"),
            models.Index(fields=["system", "external_id"], name="run_source_record_idx"),
        ]

    def __str__(self) -> str:
        return f"sync run {self.pk}"

    @property
    def duration_ms(self) -> int | None:
        if not self.finished_at:
            return None
        return int((self.finished_at - self.started_at).total_seconds() * 1000)


class SyncStep(models.Model):
    """One ordered step of a sync run: what was done, when, and how it ended."""

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    name = models.CharField(max_length=40)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    outcome = models.CharField(max_length=8, choices=StepOutcome.choices)
    detail = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="sync_step_unique_seq")]

    def __str__(self) -> str:
        return f"{self.seq}. {self.name}: {self.outcome}"


class DeadLetter(models.Model):
    """Work that ran out of retries or failed for good, with the original event, replayable."""

    event = models.ForeignKey(InboundEvent, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="dead_letters")
    stage = models.CharField(max_length=20)  # process | writeback
    reason = models.TextField()
    http_status = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=20, blank=True)
    # The external system's error body as it answered (Marketing Cloud: message, errorcode and
    # every additionalErrors item), so a 10006 shows which column or value was refused.
    error_detail = models.JSONField(default=dict, blank=True)
    original_event = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    replayed_at = models.DateTimeField(null=True, blank=True)
    replayed_by = models.CharField(max_length=120, blank=True)
    replay_run = models.ForeignKey(SyncRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        verbose_name = "dead letter"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"dead letter {self.pk}"


class AccessToken(models.Model):
    """An OAuth access token shared by every worker, so none fetches its own per call."""

    system = models.CharField(max_length=40, unique=True)
    access_token = models.TextField()
    rest_instance_url = models.CharField(max_length=300, blank=True)
    expires_at = models.DateTimeField()
    fetched_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.system} token"


class ConnectorState(models.Model):
    """Shared health of one external system's API, seen by every worker process.

    One row per system the hub calls: ``MARKETING_CLOUD``, and ``target:<id>`` for each downstream
    target; ``integrations.transport.CircuitBreaker`` keeps it.
    ``paused_until``: the system asked us to slow down (429); nobody calls before then.
    Circuit breaker: after ``consecutive_failures`` reaches the threshold the breaker
    opens until ``open_until``; then one probe call is let through (half open) and its
    outcome closes or reopens it.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
    BREAKER_STATES = [(CLOSED, "Closed"), (OPEN, "Open"), (HALF_OPEN, "Half open (probing)")]

    system = models.CharField(max_length=40, unique=True)
    paused_until = models.DateTimeField(null=True, blank=True)
    pause_reason = models.CharField(max_length=300, blank=True)
    breaker_state = models.CharField(max_length=10, choices=BREAKER_STATES, default=CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    open_until = models.DateTimeField(null=True, blank=True)
    times_opened = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    calls = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "connector state"

    def __str__(self) -> str:
        return f"{self.system}: {self.breaker_state}"

    @property
    def held_until(self) -> dt.datetime | None:
        """Until when calls are held: the pause or the open breaker's cooldown, whichever ends later.

        Stays set (in the past) while the breaker waits for its probe to succeed.
        """
        times = [self.paused_until, self.open_until if self.breaker_state != self.CLOSED else None]
        return max((t for t in times if t is not None), default=None)

    @property
    def hold_reason(self) -> str:
        """Why calls are held: the failures that opened the breaker, or the pause's reason."""
        if self.breaker_state != self.CLOSED:
            return f"{self.consecutive_failures} failures in a row; last: {self.last_error[:300]}"
        return self.pause_reason if self.paused_until else ""


class QueuedFlag(models.Model):
    """Coalesces "please run X" requests: set when X is queued, cleared when X starts.

    Thousands of events each asking for a write-back flush then queue one flush, not
    thousands (see ``integrations.queue.enqueue_once``).
    """

    name = models.CharField(max_length=80, unique=True)
    queued = models.BooleanField(default=False)
    # For timed wake-ups: when the one queued wake-up is due (a later one is then not needed).
    wake_at = models.DateTimeField(null=True, blank=True)
    # For leases (``integrations.queue.take_lease``): who holds the named work, and until when.
    held_by = models.CharField(max_length=128, blank=True)
    held_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}: {'queued' if self.queued else 'idle'}"


# API keys keep their before/after change log (django-auditlog); the hash and last use are not history.
auditlog.register(ApiClient, exclude_fields=["key_hash", "last_used_at"])


class MetricSample(models.Model):
    """One not yet folded increment of a shared metric: a counter's delta or a histogram's observation.

    Every process (gunicorn workers, qcluster workers, on any host) appends here, in its own
    transaction and without locking anything; ``integrations.metrics`` folds the rows into
    ``MetricTotal`` when ``/metrics`` is scraped (and from the resolver sweep), so this table
    holds only what happened since the last fold. The inbound-event counters are appended by a
    statement trigger on the event table (migration 0017), so no code path that changes an
    event's status can miss them.
    """

    metric = models.CharField(max_length=64)
    labels = ArrayField(models.CharField(max_length=64), default=list)
    value = models.FloatField()

    class Meta:
        verbose_name = "metric sample"

    def __str__(self) -> str:
        return f"{self.metric}{self.labels}: {self.value}"


class MetricTotal(models.Model):
    """The folded value of one metric and label set: count, sum and (histograms) per-bucket counts."""

    metric = models.CharField(max_length=64)
    labels = ArrayField(models.CharField(max_length=64), default=list)
    count = models.BigIntegerField(default=0)
    total = models.FloatField(default=0.0)
    # Observations per bucket of the metric's bounds (not cumulative); empty for counters.
    buckets = ArrayField(models.BigIntegerField(), default=list)

    class Meta:
        verbose_name = "metric total"
        constraints = [models.UniqueConstraint(fields=["metric", "labels"], name="metric_total_unique_labels")]

    def __str__(self) -> str:
        return f"{self.metric}{self.labels}: {self.count} ({self.total})"
