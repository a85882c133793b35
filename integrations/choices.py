"""Enumerations of the sync machinery."""

import re

from django.db import models

from customers.choices import MASTER_ID_TYPES, STEWARD_SYSTEM


class EventChannel(models.TextChoices):
    JOURNEY = "mc_journey", "Marketing Cloud Journey Builder"
    POLLER = "mc_poller", "Marketing Cloud reconciliation"
    IMPORT = "mc_import", "Subscriber import (backfill)"
    API = "api", "CIM events API"
    RESYNC = "resync", "Steward re-sync"


class EventStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    PROCESSING = "processing", "Processing"
    RETRYING = "retrying", "Retrying"
    WRITEBACK = "writeback", "Awaiting write-back"
    SYNCED = "synced", "Synced"
    SUPERSEDED = "superseded", "Superseded"
    REJECTED = "rejected", "Rejected"
    DEAD = "dead", "Dead-lettered"


# The statuses of an event still in the resolver's queue (claimable once its visible_at has passed).
PENDING_EVENT_STATUSES = (EventStatus.QUEUED, EventStatus.RETRYING, EventStatus.PROCESSING)
TERMINAL_EVENT_STATUSES = frozenset(
    {EventStatus.SYNCED, EventStatus.SUPERSEDED, EventStatus.REJECTED, EventStatus.DEAD}
)


class RunTrigger(models.TextChoices):
    EVENT = "event", "Event"
    RESYNC = "resync", "Re-sync"
    REPLAY = "replay", "Dead-letter replay"


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting to retry"
    SUCCEEDED = "succeeded", "Succeeded"
    SUPERSEDED = "superseded", "Superseded"
    FAILED = "failed", "Failed"
    DEAD = "dead", "Dead-lettered"


class StepOutcome(models.TextChoices):
    OK = "ok", "OK"
    SKIPPED = "skipped", "Skipped"
    RETRY = "retry", "Will retry"
    FAILED = "failed", "Failed"


class ApiScope(models.TextChoices):
    INGEST = "ingest", "Ingest events"
    READ = "read", "Read records"
    ERASE = "erase", "Erase a person's data (GDPR)"
    STEWARD = "steward", "Merge, unmerge, not-a-match and pins"


MARKETING_CLOUD = "MARKETING_CLOUD"

# A source system's code, as events name it (B2C_COMMERCE, SALESFORCE, POS, ...).
SYSTEM_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,39}$")
# Sources no API key may send on ``/api/v1/events``: the steward's own edits come only from the
# admin and the steward API, Marketing Cloud only through its own authenticated channels (the
# signed journey call, ENS, the reconciliation poller), and the master-ID types are the hub's own.
RESERVED_SOURCES = frozenset({STEWARD_SYSTEM, MARKETING_CLOUD, *MASTER_ID_TYPES})
