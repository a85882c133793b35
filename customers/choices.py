"""Enumerations of the MDM domain."""

from django.db import models


class ContactPointKind(models.TextChoices):
    EMAIL = "ContactPointEmail", "Email"
    PHONE = "ContactPointPhone", "Phone"
    ADDRESS = "ContactPointAddress", "Address"


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
