"""Downstream targets (webhook endpoints, Salesforce core) and the deliveries of changes to them."""

from __future__ import annotations

import base64
import datetime as dt
import secrets

from auditlog.registry import auditlog
from django.db import models
from django.utils import timezone

from customers.choices import ChangeType
from integrations.downstream.egress import validate_target_url
from integrations.models import ConnectorState
from integrations.transport import CircuitBreaker


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class DownstreamTarget(models.Model):
    """A system told about golden-record changes, in order per master ID.

    Its configuration only: how deliveries to it fare (failures in a row, the pause, the last error
    and success) is its ``ConnectorState`` row ``target:<id>``, kept by the one circuit breaker
    (``integrations.transport.CircuitBreaker``, tuned in ``delivery.py``).
    """

    WEBHOOK, SALESFORCE = "webhook", "salesforce"
    KINDS = [(WEBHOOK, "Webhook (Standard Webhooks)"), (SALESFORCE, "Salesforce core (REST upsert)")]

    name = models.CharField(max_length=80, unique=True)
    kind = models.CharField(max_length=12, choices=KINDS, default=WEBHOOK)
    # Only administrators change url and secret (the admin makes them read-only for anyone else).
    url = models.URLField(
        max_length=500,
        validators=[validate_target_url],
        help_text="Webhook endpoint, or the Salesforce My Domain URL: https, at a public address "
        "(checked on saving and again on every connection).",
    )
    secret = models.CharField(
        max_length=200,
        default=new_webhook_secret,
        help_text="Signing secret (whsec_...). Receivers verify webhook-signature with it.",
    )
    event_types = models.JSONField(
        default=list, blank=True, help_text=f"Change types to send; empty means all: {', '.join(ChangeType.values)}"
    )
    enabled = models.BooleanField(default=True)
    # Fan-out position: the last change event turned into deliveries for this target.
    cursor = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "downstream target"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def wants(self, change_type: str) -> bool:
        return not self.event_types or change_type in self.event_types

    @staticmethod
    def breaker_key(target_id: int) -> str:
        """The ``ConnectorState.system`` of a target's breaker."""
        return f"target:{target_id}"

    @property
    def health(self) -> ConnectorState:
        """How deliveries to this target fare, read fresh each time (a closed, unsaved state before any)."""
        return CircuitBreaker(self.breaker_key(self.pk)).state()

    # What the target list and page show of its health.
    @property
    def paused_until(self) -> dt.datetime | None:
        return self.health.held_until

    @property
    def pause_reason(self) -> str:
        return self.health.hold_reason

    @property
    def consecutive_failures(self) -> int:
        return self.health.consecutive_failures

    @property
    def last_error(self) -> str:
        return self.health.last_error

    @property
    def last_success_at(self) -> dt.datetime | None:
        return self.health.last_success_at


class Delivery(models.Model):
    """One change event for one target. ``webhook_id`` stays the same across retries."""

    PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
    STATUSES = [(PENDING, "Pending"), (DELIVERED, "Delivered"), (DEAD, "Dead-lettered")]

    target = models.ForeignKey(DownstreamTarget, on_delete=models.CASCADE, related_name="deliveries")
    change = models.ForeignKey("customers.ChangeEvent", on_delete=models.CASCADE, related_name="deliveries")
    master_id = models.CharField(max_length=36)
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    # The size of the last answer, instead of its body: an answer is never stored.
    last_response_bytes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Size of the endpoint's last answer in bytes (its body is not kept)."
    )
    # The hub's own description of the last failure (status, size, reason), never the endpoint's words.
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["target", "change"], name="delivery_unique_change")]
        indexes = [
            # The head of each person's queue per target: DISTINCT ON (master_id) ... ORDER BY change.
            models.Index(
                fields=["target", "master_id", "change"],
                name="delivery_queue_idx",
                condition=models.Q(status__in=["pending", "dead"]),
            ),
            models.Index(fields=["target", "status", "next_attempt_at"], name="delivery_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.target} <- change {self.change_id}"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.change_id}"


# A target's configuration keeps its before/after change log (django-auditlog); the secret only as a
# fingerprint, and the delivery state (cursor; the pause and errors live in ConnectorState) is not configuration.
auditlog.register(
    DownstreamTarget,
    mask_fields=["secret"],
    mask_callable="hub.audit.secret_fingerprint",
    exclude_fields=["cursor", "created_at"],
)
