"""The golden record, its contact points, cross references and history."""

from __future__ import annotations

import re
import secrets
import time
import uuid

from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.postgres.indexes import OpClass
from django.db import models
from django.db.models.functions import Upper

from customers.choices import (
    CandidateStatus,
    ContactPointKind,
    CrossReferenceStatus,
    EngagementChannel,
    HistoryAction,
    MatcherStatus,
    MatchOutcome,
    PrivacyConsentStatus,
    SurvivorshipStrategy,
    WritebackState,
)


def new_master_id() -> str:
    """An opaque, never-reused master ID: a UUID, as the accelerator's MDM issues, of version 7.

    RFC 9562's version 7 starts with the creation time in milliseconds and ends with 74
    random bits, so the indexes that hold master IDs (the golden record's, its history's,
    its change events') grow at their end instead of at random places: a large import
    writes far fewer index pages. (Python's uuid module makes version 7 only from 3.14 on;
    the layout is six lines, so no dependency for it.)
    """
    millis = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = secrets.randbits(74)
    value = millis << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return str(uuid.UUID(int=value))


# The shape of every master ID the hub has issued: a UUID in its hyphenated form (of any version,
# so IDs issued before version 7 match too). Case is not part of a UUID (RFC 9562).
MASTER_ID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def is_master_id(value: object) -> bool:
    """Whether ``value`` has the shape of a master ID (it may still belong to no golden record)."""
    return isinstance(value, str) and MASTER_ID_SHAPE.fullmatch(value) is not None


class Individual(models.Model):
    """One golden record per real person; ``master_id`` never changes once issued."""

    # Unique by a constraint, not unique=True, so PostgreSQL gets no second (pattern) index to keep.
    master_id = models.CharField(max_length=36, default=new_master_id, editable=False)
    party_type = models.CharField(max_length=20, default="Individual", editable=False)
    salutation = models.CharField(max_length=40, blank=True)
    first_name = models.CharField(max_length=100, blank=True)
    middle_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    name_suffix = models.CharField(max_length=40, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    gender = models.CharField(max_length=32, blank=True)
    # Consent lives on the Individual in CIM (doNotMarketFromUpdateDate).
    do_not_market_since = models.DateTimeField(null=True, blank=True)
    consent_source = models.CharField(max_length=40, blank=True)
    # Set when the person's data was erased (GDPR): the record stays as a tombstone without personal data.
    erased_at = models.DateTimeField(null=True, blank=True)
    # Merged into another golden record: this master ID redirects to the survivor forever.
    merged_into = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="merged_records"
    )
    merged_at = models.DateTimeField(null=True, blank=True)
    # Values a steward pinned ({attribute: value}); they win over every source.
    pins = models.JSONField(default=dict, blank=True)
    # Per golden attribute: which system and record supplied it, when, and by which rule.
    lineage = models.JSONField(default=dict, blank=True)
    # Everything the record and its sources hold, as the match rules compare it (written with the
    # blocking keys): candidates are compared on it without reading and parsing their sources.
    match_profile = models.JSONField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        verbose_name = "golden record"
        ordering = ["-id"]
        permissions = [
            ("erase_individual", "Can erase a person's data (GDPR)"),
            ("merge_individual", "Can merge, unmerge and mark not-a-match"),
            ("pin_individual", "Can pin golden values"),
            ("resync_individual", "Can re-sync golden records to connected systems"),
        ]
        constraints = [models.UniqueConstraint(fields=["master_id"], name="individual_master_id_unique")]
        indexes = [
            # Prefix search as the admin runs it (istartswith -> UPPER(col) LIKE 'X%').
            models.Index(OpClass(Upper("last_name"), name="varchar_pattern_ops"), name="individual_last_prefix_idx"),
            models.Index(OpClass(Upper("first_name"), name="varchar_pattern_ops"), name="individual_first_prefix_idx"),
        ]

    def __str__(self) -> str:
        return self.master_id

    @property
    def person_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.middle_name, self.last_name) if part)


class ContactPoint(models.Model):
    """An email, phone or postal address of a golden record (CIM ContactPoint*)."""

    # No index of its own: the unique constraint (individual, kind, value_key) leads with it.
    individual = models.ForeignKey(Individual, on_delete=models.CASCADE, related_name="contact_points", db_index=False)
    kind = models.CharField(max_length=24, choices=ContactPointKind.choices)
    # The normalised value, used to match and to keep one row per real contact point.
    value_key = models.CharField(max_length=320)
    is_primary = models.BooleanField(default=False)
    active_from_date = models.DateField(null=True, blank=True)
    email_address = models.CharField(max_length=320, blank=True)
    telephone_number = models.CharField(max_length=40, blank=True)
    address_line1 = models.CharField(max_length=200, blank=True)
    city_name = models.CharField(max_length=100, blank=True)
    postal_code_text = models.CharField(max_length=20, blank=True)
    state_province_name = models.CharField(max_length=100, blank=True)
    country_name = models.CharField(max_length=100, blank=True)
    source_system = models.CharField(max_length=40, blank=True)
    # Deliverability as a sending system reports it (CIM ContactPoint.isUndeliverable and
    # ContactPointEmail.emailLatestBounceDateTime): Marketing Cloud's Held and Bounced statuses.
    # Not consent: an undeliverable address says nothing about what the person agreed to.
    undeliverable_since = models.DateTimeField(null=True, blank=True)
    latest_bounce_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "-is_primary", "id"]
        constraints = [
            models.UniqueConstraint(fields=["individual", "kind", "value_key"], name="contact_point_unique_value"),
        ]
        indexes = [
            models.Index(fields=["kind", "value_key"], name="contact_point_lookup_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


class CrossReference(models.Model):
    """Links one record in one source system (system, external ID) to a golden record."""

    individual = models.ForeignKey(Individual, on_delete=models.PROTECT, related_name="cross_references")
    system = models.CharField(max_length=40)
    external_id = models.CharField(max_length=255)
    # The source's own internal ID of the record (CIM ``id``), kept apart from ``external_id``:
    # for Marketing Cloud its numeric SubscriberID (ENS events name subscribers by it), never
    # the SubscriberKey (that is ``external_id``); blank while the source has not told us.
    system_record_id = models.CharField("system record ID", max_length=64, blank=True)
    # Which part of the source system holds the record: for Marketing Cloud the MID of its business
    # unit (the unit whose secret verified the call, or whose read found it). Blank: the default unit.
    business_unit = models.CharField("business unit", max_length=20, blank=True)
    status = models.CharField(max_length=10, choices=CrossReferenceStatus.choices, default=CrossReferenceStatus.VALID)
    # The source's own status of the record, e.g. Marketing Cloud's Active / Unsubscribed.
    source_status = models.CharField(max_length=40, blank=True)
    # When the source changed that status, as a status read (Marketing Cloud's Subscriber
    # ModifiedDate) said: a status read again, or an older one, changes nothing.
    source_status_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    # When the source last changed the record; an event older than this is superseded.
    source_modified_at = models.DateTimeField(null=True, blank=True)
    source_payload = models.JSONField(default=dict, blank=True)
    writeback_state = models.CharField(max_length=12, choices=WritebackState.choices, default=WritebackState.NOT_NEEDED)
    # What the source system is known to hold as master ID (from its event or our last write).
    source_master_id = models.CharField(max_length=64, blank=True)
    written_at = models.DateTimeField(null=True, blank=True)
    writeback_error = models.TextField(blank=True)
    # Pending write-backs form a queue: due time, attempts so far (reset when written).
    writeback_due_at = models.DateTimeField(null=True, blank=True)
    writeback_attempts = models.PositiveIntegerField(default=0)
    # The decision that linked this source record to its golden record: rule and comparison.
    match_rule = models.CharField(max_length=120, blank=True)
    match_detail = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "cross reference"
        ordering = ["system", "external_id"]
        constraints = [
            models.UniqueConstraint(fields=["system", "external_id"], name="cross_reference_unique_source_record"),
        ]
        indexes = [
            models.Index(fields=["writeback_state", "system"], name="xref_writeback_idx"),
            models.Index(fields=["system", "system_record_id"], name="xref_system_record_idx"),
            models.Index(fields=["external_id"], name="xref_external_id_idx"),
            models.Index(
                fields=["system", "writeback_due_at"],
                condition=models.Q(writeback_state="pending"),
                name="xref_writeback_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.system}:{self.external_id}"


class CommunicationSubscriptionConsent(models.Model):
    """A person's consent to one list of one source system, on one channel.

    Named after Salesforce's CommSubscriptionConsent (CIM 1.0 has no consent entity): an
    unsubscribe from a single list (a Marketing Cloud list other than All Subscribers) is
    recorded here and leaves the person marketable; opting out of all marketing is the
    Individual's ``do_not_market_since`` (CIM doNotMarketFromUpdateDate).
    """

    # No index of its own: the unique constraint leads with it.
    individual = models.ForeignKey(
        Individual, on_delete=models.CASCADE, related_name="subscription_consents", db_index=False
    )
    # The list as its system names it (CIM externalSourceId / externalRecordId of the subscription).
    system = models.CharField(max_length=40)
    subscription_id = models.CharField("list ID", max_length=64)
    channel = models.CharField(max_length=16, choices=EngagementChannel.choices, default=EngagementChannel.EMAIL)
    status = models.CharField(max_length=8, choices=PrivacyConsentStatus.choices)
    # Since when the status holds (the unsubscribe's time), and how it was captured.
    effective_from = models.DateTimeField("since")
    capture_source = models.CharField("captured by", max_length=40, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "list consent"
        ordering = ["system", "subscription_id", "channel"]
        constraints = [
            models.UniqueConstraint(
                fields=["individual", "system", "subscription_id", "channel"], name="subscription_consent_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.system} list {self.subscription_id} ({self.channel}): {self.status}"


class HistoryEntry(models.Model):
    """One change to a golden record or its cross references, written in the same transaction."""

    individual = models.ForeignKey(Individual, on_delete=models.SET_NULL, null=True, blank=True, related_name="history")
    master_id = models.CharField(max_length=36)
    action = models.CharField(max_length=16, choices=HistoryAction.choices)
    object_type = models.CharField(max_length=40)
    object_id = models.BigIntegerField(null=True, blank=True)
    # Who or what: "sync-run:123", "user:alice", "api-key:pos".
    actor = models.CharField(max_length=120)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "history entry"
        verbose_name_plural = "history"
        ordering = ["-created_at", "-id"]
        # A plain index (db_index on a CharField would add a pattern index nobody queries).
        indexes = [models.Index(fields=["master_id"], name="history_master_id_idx")]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.master_id}"


class ChangeEvent(models.Model):
    """Outbox: one row per change of a golden record, written in the change's transaction.

    Downstream systems are told about changes in ``id`` order per master ID. ``snapshot``
    is the CIM Individual as it was right after the change (None for bulk imports,
    which are rendered when delivered).
    """

    master_id = models.CharField(max_length=36)
    change_type = models.CharField(max_length=20)
    change = models.JSONField(default=dict)
    snapshot = models.JSONField(null=True, blank=True)
    actor = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Turned into deliveries for the downstream targets yet?
    fanned_out = models.BooleanField(default=False)

    class Meta:
        verbose_name = "change event"
        ordering = ["id"]
        indexes = [
            models.Index(fields=["id"], condition=models.Q(fanned_out=False), name="change_to_fan_out_idx"),
            models.Index(fields=["master_id"], name="change_master_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.change_type} {self.master_id} #{self.pk}"


class MatchKey(models.Model):
    """A blocking key of a golden record: candidates are the records sharing a key, never the table."""

    individual = models.ForeignKey(Individual, on_delete=models.CASCADE, related_name="match_keys")
    kind = models.CharField(max_length=16)
    value = models.CharField(max_length=200)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "value", "individual"], name="match_key_unique")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class MatchRule(models.Model):
    """A match rule stewards maintain: all criteria must hold; the outcome is auto-merge or suspect."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    outcome = models.CharField(max_length=12, choices=MatchOutcome.choices)
    # Lower runs first among rules with the same outcome (auto-merge rules are always tried first).
    priority = models.PositiveIntegerField(default=100)
    enabled = models.BooleanField(default=True)
    # [{"attribute": "last_name", "method": "fuzzy", "threshold": 0.9, "blank_matches": false}, ...]
    criteria = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ["outcome", "priority", "id"]

    def __str__(self) -> str:
        return self.name


class SurvivorshipRule(models.Model):
    """How one golden attribute is chosen among the source records' values."""

    attribute = models.CharField(max_length=24, unique=True)
    strategy = models.CharField(max_length=16, choices=SurvivorshipStrategy.choices)
    # Systems in order of trust, comma separated; also breaks ties of the other strategies.
    source_priority = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["attribute"]

    def __str__(self) -> str:
        return f"{self.attribute}: {self.get_strategy_display()}"

    @property
    def priority_list(self) -> list[str]:
        return [part.strip().upper() for part in self.source_priority.split(",") if part.strip()]


class MatchCandidate(models.Model):
    """A suspect pair waiting for a steward (or decided by one); ``left`` is always the older record."""

    left = models.ForeignKey(Individual, on_delete=models.CASCADE, related_name="+")
    right = models.ForeignKey(Individual, on_delete=models.CASCADE, related_name="+")
    rule = models.CharField(max_length=120)
    score = models.FloatField(default=0.0)
    comparison = models.JSONField(default=dict)
    status = models.CharField(max_length=12, choices=CandidateStatus.choices, default=CandidateStatus.OPEN)
    actor = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=120, blank=True)
    # The matcher model whose weight queued the pair (null: the rules alone decided).
    model_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "match candidate"
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["left", "right"], condition=models.Q(status="open"), name="match_candidate_open_pair"
            ),
            models.CheckConstraint(condition=models.Q(left__lt=models.F("right")), name="match_candidate_ordered"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="match_candidate_queue_idx")]

    def __str__(self) -> str:
        return f"{self.left_id} ~ {self.right_id} ({self.rule})"


class NotAMatch(models.Model):
    """A pair a steward said are different people: never auto-merged or queued again until cleared."""

    left = models.ForeignKey(Individual, on_delete=models.CASCADE, related_name="+")
    right = models.ForeignKey(Individual, on_delete=models.CASCADE, related_name="+")
    actor = models.CharField(max_length=120)
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "not-a-match pair"
        constraints = [
            models.UniqueConstraint(fields=["left", "right"], name="not_a_match_pair"),
            models.CheckConstraint(condition=models.Q(left__lt=models.F("right")), name="not_a_match_ordered"),
        ]
        indexes = [models.Index(fields=["right", "left"], name="not_a_match_reverse_idx")]

    def __str__(self) -> str:
        return f"{self.left_id} != {self.right_id}"


class MatcherModel(models.Model):
    """A version of the probabilistic matcher's parameters (m and u per attribute level, thresholds).

    ``manage.py train_matcher`` saves drafts; a steward activates one in the admin after a dry
    run. At most one is active (the constraint); without one the rules alone decide.
    """

    version = models.PositiveIntegerField(unique=True)
    status = models.CharField(max_length=8, choices=MatcherStatus.choices, default=MatcherStatus.DRAFT)
    # {"m": {attribute: {level: p}}, "u": {...}, "prior": p}
    parameters = models.JSONField(default=dict)
    auto_threshold = models.FloatField()
    review_threshold = models.FloatField()
    training_report = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=120, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.CharField(max_length=120, blank=True)

    class Meta:
        verbose_name = "matcher model"
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="active"), name="matcher_model_one_active"
            ),
            models.CheckConstraint(
                condition=models.Q(review_threshold__lte=models.F("auto_threshold")),
                name="matcher_model_review_below_auto",
            ),
        ]

    def __str__(self) -> str:
        return f"matcher model v{self.version} ({self.status})"


__all__ = [
    "ChangeEvent",
    "CommunicationSubscriptionConsent",
    "ContactPoint",
    "CrossReference",
    "HistoryEntry",
    "Individual",
    "MatchCandidate",
    "MatchKey",
    "MatchRule",
    "MatcherModel",
    "NotAMatch",
    "SurvivorshipRule",
    "is_master_id",
    "new_master_id",
]


# The configuration stewards maintain keeps its before/after change log (django-auditlog).
auditlog.register(MatchRule, exclude_fields=["updated_at", "updated_by"])
auditlog.register(SurvivorshipRule, exclude_fields=["updated_at"])
auditlog.register(MatcherModel, include_fields=["status", "auto_threshold", "review_threshold", "activated_by"])
