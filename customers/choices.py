"""Enumerations of the MDM domain."""

from django.db import models


class ContactPointKind(models.TextChoices):
    EMAIL = "ContactPointEmail", "Email"
    PHONE = "ContactPointPhone", "Phone"
    ADDRESS = "ContactPointAddress", "Address"


class EngagementChannel(models.TextChoices):
    """The channel a consent is about (Salesforce's ContactPointType picklist values)."""

    EMAIL = "Email", "Email"
    PHONE = "Phone", "Phone"
    MAILING_ADDRESS = "MailingAddress", "Mailing address"


class PrivacyConsentStatus(models.TextChoices):
    """A consent's status (the values of Salesforce's PrivacyConsentStatus that a list consent takes)."""

    OPT_IN = "OptIn", "Opted in"
    OPT_OUT = "OptOut", "Opted out"


class CrossReferenceStatus(models.TextChoices):
    VALID = "VALID", "Valid"
    INVALID = "INVALID", "Invalid"


class WritebackState(models.TextChoices):
    NOT_NEEDED = "not_needed", "Not needed"
    PENDING = "pending", "Pending"
    WRITTEN = "written", "Written"
    FAILED = "failed", "Failed"


class HistoryAction(models.TextChoices):
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    LINK = "link", "Cross reference linked"
    RELINK = "relink", "Cross reference moved"
    CONSENT = "consent", "Consent"
    WRITEBACK = "writeback", "Master ID written back"
    RESYNC = "resync", "Re-sync requested"
    ERASE = "erase", "Personal data erased"
    MERGE = "merge", "Merged"
    UNMERGE = "unmerge", "Unmerged"
    PIN = "pin", "Value pinned"
    UNPIN = "unpin", "Pin removed"
    NOT_A_MATCH = "not_a_match", "Marked not a match"
    SUSPECT = "suspect", "Queued as a possible match"


class MatchOutcome(models.TextChoices):
    AUTO_MERGE = "auto_merge", "Auto-merge"
    SUSPECT = "suspect", "Suspect (review)"
    GUARD = "guard", "Guard (blocks an auto-merge by match weight)"


class CandidateStatus(models.TextChoices):
    OPEN = "open", "Open"
    MERGED = "merged", "Merged"
    NOT_A_MATCH = "not_a_match", "Not a match"
    SKIPPED = "skipped", "Skipped"
    CLOSED = "closed", "Closed (record changed)"


class MatcherStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class SurvivorshipStrategy(models.TextChoices):
    SOURCE_PRIORITY = "source_priority", "Source priority"
    MOST_RECENT = "most_recent", "Most recent"
    MOST_FREQUENT = "most_frequent", "Most frequent"


# The steward's own edits are a source system of their own (as Informatica's Admin source).
STEWARD_SYSTEM = "STEWARD"


# externalIdType values that carry a golden record's master ID (CIM usage guide:
# "GLOBAL" or "MDM" in system-level messages).
MASTER_ID_TYPES = frozenset({"MDM", "GLOBAL"})


class ChangeType(models.TextChoices):
    """What downstream systems are told happened to a golden record."""

    CREATED = "created", "Created"
    UPDATED = "updated", "Updated"
    MERGED = "merged", "Merged"
    UNMERGED = "unmerged", "Unmerged"
    CONSENT = "consent", "Consent changed"
    ERASED = "erased", "Erased"
    RESYNC = "resync", "Re-sync requested"
