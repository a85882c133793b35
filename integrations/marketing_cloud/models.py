"""Marketing Cloud-specific state: ENS callbacks and notifications, the reconciliation watermark."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.utils import timezone


class EnsCallback(models.Model):
    """A callback registered with the Event Notification Service.

    ``manage.py mc_ens_register`` creates the row before it asks ENS to create the
    callback, with no ``callback_id``: a registration waiting for ENS's handshake
    (ENS names the callback ID only in that handshake, sent while the creation
    request is still open). The handshake fills in ``callback_id`` and
    ``verification_key``; ``verified_at`` is set once ENS has confirmed the key.
    ENS returns the signature key only once, when the callback is created; it is
    kept here (never shown in the admin) to verify every notification batch.
    """

    # Null, not blank, while the registration waits: many may wait at once under the unique index.
    callback_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    name = models.CharField(max_length=100, blank=True)
    url = models.URLField(max_length=500, blank=True)
    verification_key = models.CharField(max_length=200, blank=True)
    signature_key = models.CharField(max_length=200, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    subscription_id = models.CharField(max_length=64, blank=True)
    event_types = models.JSONField(default=list, blank=True)
    # The MID of the business unit the callback was registered in (with its token); its signature
    # key attributes a batch to that unit. Blank: the single unit configured the MC_* way.
    business_unit = models.CharField(max_length=20, blank=True)
    # When the registration opened: the handshake window counts from here.
    created_at = models.DateTimeField(default=timezone.now)
    handshake_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "ENS callback"

    def __str__(self) -> str:
        return self.name or self.callback_id or f"registration {self.pk}"


class EnsNotification(models.Model):
    """One ENS event as received; ``composite_id`` makes redeliveries land on the same row."""

    RECEIVED, APPLIED, UNMATCHED, STORED = "received", "applied", "unmatched", "stored"
    STATUSES = [
        (RECEIVED, "Received"),
        (APPLIED, "Applied"),
        (UNMATCHED, "No golden record found"),
        (STORED, "Stored (type not acted on)"),
    ]

    composite_id = models.CharField(max_length=200, unique=True)
    event_type = models.CharField(max_length=100, db_index=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    mid = models.CharField(max_length=20, blank=True)
    # The MID of the business unit whose ENS signature key verified the batch; blank: a key stored
    # by mc_ens_register (or the single unit's MC_ENS_SIGNATURE_KEY without a MID).
    business_unit = models.CharField(max_length=20, blank=True)
    subscriber_id = models.CharField(max_length=40, blank=True, db_index=True)
    email_address = models.CharField(max_length=320, blank=True)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=STATUSES, default=RECEIVED)
    master_id = models.CharField(max_length=36, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "ENS notification"
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "event_type"], name="ens_status_type_idx")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.composite_id}"


class ReconciliationState(models.Model):
    """The reconciliation poller's watermark and last run, one row per business unit and data extension."""

    # The MID of a configured business unit; blank for the single unit configured the MC_* way.
    business_unit = models.CharField(max_length=20, blank=True)
    de_key = models.CharField(max_length=100)
    # Highest ModifiedDate seen; the next run reads from here minus the overlap.
    watermark = models.DateTimeField(null=True, blank=True)
    overlap_seconds = models.PositiveIntegerField(default=900)
    page_size = models.PositiveIntegerField(default=2500)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=20, blank=True)
    last_rows_read = models.PositiveIntegerField(default=0)
    last_pages_read = models.PositiveIntegerField(default=0)
    last_events_sent = models.PositiveIntegerField(default=0)
    last_rows_rejected = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name = "reconciliation poller"
        constraints = [
            models.UniqueConstraint(fields=["business_unit", "de_key"], name="reconciliation_unit_de_key_unique")
        ]

    def __str__(self) -> str:
        unit = f" (MID {self.business_unit})" if self.business_unit else ""
        return f"reconciliation of {self.de_key}{unit}"


class ImportJob(models.Model):
    """One subscriber-export import; committed progress makes it resumable after an interruption."""

    RUNNING, COMPLETED, FAILED, INTERRUPTED = "running", "completed", "failed", "interrupted"
    STATUSES = [(RUNNING, "Running"), (COMPLETED, "Completed"), (FAILED, "Failed"), (INTERRUPTED, "Interrupted")]

    file_name = models.CharField(max_length=500)
    # Size plus a hash of the head of the file: the same export resumes, another one starts anew.
    fingerprint = models.CharField(max_length=80, db_index=True)
    file_size = models.BigIntegerField()
    status = models.CharField(max_length=12, choices=STATUSES, default=RUNNING)
    rows_done = models.BigIntegerField(default=0)  # data rows committed (good and bad)
    # Rows per batch, and the batches committed: a resumed import skips those (they may have
    # committed out of order when several workers applied batches side by side).
    batch_size = models.PositiveIntegerField(default=0)
    batches_done = ArrayField(models.PositiveIntegerField(), default=list, blank=True)
    created = models.BigIntegerField(default=0)
    matched = models.BigIntegerField(default=0)
    superseded = models.BigIntegerField(default=0)
    suspects_queued = models.BigIntegerField(default=0)  # pairs the match rules sent to review
    rejected = models.BigIntegerField(default=0)
    writebacks_queued = models.BigIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)  # the first bad rows: line, field, message
    # The file's columns and the hub column each was read as ("" = ignored), and the zone of dates
    # given without an offset (Marketing Cloud system time unless the import named another).
    columns = models.JSONField(default=dict, blank=True)
    time_zone = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "subscriber import"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"import {self.pk} of {self.file_name}"


class BulkWriteback(models.Model):
    """One asynchronous upsert of pending master-ID write-backs (``/data/v1/async/dataextensions``).

    The flush claims the rows and records them here (their cross reference IDs and the master IDs
    sent, in submission order: Marketing Cloud's per-row results come in that order) before it calls,
    so a worker that dies after the call leaves a row here, not rows nobody knows were sent. While a
    request is in flight (``submitting`` or ``pending``) its cross references stay pending with no due
    time, and no other flush sends them; the poll maps each row's result back to its cross reference.
    """

    SUBMITTING, PENDING, COMPLETE, FAILED, RELEASED = "submitting", "pending", "complete", "failed", "released"
    STATES = [
        (SUBMITTING, "Submitting"),
        (PENDING, "Waiting for Marketing Cloud"),
        (COMPLETE, "Complete"),
        (FAILED, "Failed (rows sent again)"),
        (RELEASED, "Released (rows sent again)"),
    ]
    IN_FLIGHT = (SUBMITTING, PENDING)

    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    de_key = models.CharField(max_length=100)
    # The MID of the business unit the request went to (its token polls it); blank: the default unit.
    business_unit = models.CharField(max_length=20, blank=True)
    state = models.CharField(max_length=12, choices=STATES, default=SUBMITTING)
    rows = models.PositiveIntegerField()
    # Outcomes once complete: written, failed for good, sent again later (transient), and rows whose
    # cross reference changed while the request was in flight (left to the next flush).
    rows_written = models.PositiveIntegerField(default=0)
    rows_failed = models.PositiveIntegerField(default=0)
    rows_retried = models.PositiveIntegerField(default=0)
    rows_superseded = models.PositiveIntegerField(default=0)
    xref_ids = ArrayField(models.BigIntegerField())
    master_ids = ArrayField(models.CharField(max_length=64, blank=True))
    claimed_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    polls = models.PositiveIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Marketing Cloud's requestStatus and resultStatus as last read.
    request_status = models.CharField(max_length=20, blank=True)
    result_status = models.CharField(max_length=40, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name = "bulk write-back request"
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["next_poll_at"],
                name="bulk_wb_in_flight_idx",
                condition=models.Q(state__in=("submitting", "pending")),
            ),
            # "Is this cross reference in a request still in flight?" answered from the in-flight rows only.
            GinIndex(
                fields=["xref_ids"], name="bulk_wb_xrefs_idx", condition=models.Q(state__in=("submitting", "pending"))
            ),
        ]

    def __str__(self) -> str:
        return f"bulk write-back {self.pk} ({self.rows} rows, {self.state})"


class SubscriberStatusSync(models.Model):
    """The status read's watermark and last run: All Subscribers' changes, read through SOAP.

    One row per business unit (each unit's All Subscribers is read with its token). Held beside
    the data extension's ``ReconciliationState`` because the two read different things (the data
    extension's rows; the Subscriber objects' Status) with watermarks of their own.
    """

    name = models.CharField(max_length=40, default="All Subscribers")
    # The MID of a configured business unit; blank for the single unit configured the MC_* way.
    business_unit = models.CharField(max_length=20, blank=True)
    # Highest Subscriber ModifiedDate read; the next run reads from here minus the overlap.
    watermark = models.DateTimeField(null=True, blank=True)
    overlap_seconds = models.PositiveIntegerField(default=900)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=20, blank=True)
    last_read = models.PositiveIntegerField(default=0)
    last_pages = models.PositiveIntegerField(default=0)
    last_applied = models.PositiveIntegerField(default=0)
    last_unchanged = models.PositiveIntegerField(default=0)
    last_unknown = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name = "subscriber status read"
        constraints = [models.UniqueConstraint(fields=["business_unit"], name="status_read_unit_unique")]

    def __str__(self) -> str:
        unit = f" (MID {self.business_unit})" if self.business_unit else ""
        return f"status read of {self.name}{unit}"


class UnsubscribeWriteback(models.Model):
    """Telling Marketing Cloud that a subscriber is Unsubscribed: one row per cross reference.

    Pending rows are the queue (due time, attempts), as the master-ID write-back's pending
    cross references are; another opt-out for the same subscriber lands on the same row.
    """

    PENDING, WRITTEN, FAILED = "pending", "written", "failed"
    STATES = [(PENDING, "Pending"), (WRITTEN, "Written"), (FAILED, "Failed")]

    cross_reference = models.OneToOneField(
        "customers.CrossReference", on_delete=models.CASCADE, related_name="mc_unsubscribe"
    )
    state = models.CharField(max_length=8, choices=STATES, default=PENDING)
    # The opt-out being told: since when, and which system or steward recorded it.
    opted_out_since = models.DateTimeField()
    consent_source = models.CharField(max_length=40, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    error_code = models.CharField(max_length=20, blank=True)
    written_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "unsubscribe write-back"
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(fields=["due_at"], condition=models.Q(state="pending"), name="mc_unsub_due_idx"),
        ]

    def __str__(self) -> str:
        return f"unsubscribe {self.cross_reference_id} ({self.state})"


class ContactDeletion(models.Model):
    """A GDPR erasure's request to delete the contact in Marketing Cloud (``MC_ERASE_CONTACTS``).

    One row per erased Marketing Cloud contact key. ``pending`` until Marketing Cloud takes
    the delete (``operationInitiated``), ``accepted`` with its ``operation_id`` from then
    (the operation runs for hours; its status is polled into ``operation_status``), and
    ``failed`` when Marketing Cloud refused it, the attempts ran out, or the operation ended
    other than Completed.
    """

    PENDING, ACCEPTED, FAILED = "pending", "accepted", "failed"
    STATES = [(PENDING, "Pending"), (ACCEPTED, "Accepted"), (FAILED, "Failed")]

    individual = models.ForeignKey(
        "customers.Individual", on_delete=models.CASCADE, related_name="mc_contact_deletions"
    )
    contact_key = models.CharField(max_length=255, unique=True)
    # The MID of the business unit the contact's subscriber belonged to (its token deletes it); blank: the default.
    business_unit = models.CharField(max_length=20, blank=True)
    state = models.CharField(max_length=8, choices=STATES, default=PENDING)
    requested_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    operation_id = models.BigIntegerField(null=True, blank=True)
    # The operation's status as last polled (Marketing Cloud's words: Pending, Processing, Completed, ...).
    operation_status = models.CharField(max_length=40, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name = "Marketing Cloud contact deletion"
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(fields=["due_at"], condition=models.Q(state="pending"), name="mc_contact_del_due_idx"),
        ]

    def __str__(self) -> str:
        return f"contact deletion {self.pk} ({self.state})"
