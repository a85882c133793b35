"""The data extension the hub reads and writes back to, declared once; and Marketing Cloud's time.

A Marketing Cloud data extension has a fixed schema: each field has a name, a type (Text, Number,
Decimal, Date, Boolean, EmailAddress, Phone, Locale), a maximum length, whether it is required and
whether it is part of the primary key. The tenant refuses what does not fit. :data:`INDIVIDUAL` is
the data extension this hub expects (the "Individual" data extension of the accelerator's use case
1c, shared reference §1.4 and §5); the sandbox serves exactly this declaration, ``make run`` and the
tests use it, and ``manage.py mc_check`` compares a real tenant's data extension with what the hub is
configured for.

Marketing Cloud's system time is US Central Standard Time, UTC-6 all year, without daylight saving
(AMPscript ``SystemDateToLocalDate`` documentation; shared reference §6). Dates in row reads come as
``6/23/2024 12:00:00 AM`` in that time, and dates written by SQL activities with ``GETDATE()`` are
in it too. ``Etc/GMT+6`` is the IANA name of that fixed offset (the sign is POSIX's, inverted);
``America/Chicago`` would be wrong half the year.

No Django imports: the Marketing Cloud sandbox (``sandboxes.marketing_cloud``, a plain library) uses
this module as well.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

__all__ = [
    "FIELD_TYPES",
    "INDIVIDUAL",
    "MC_SYSTEM_TIME",
    "DataExtensionField",
    "DataExtensionSchema",
    "format_mc_datetime",
    "parse_mc_datetime",
]

MC_SYSTEM_TIME = ZoneInfo("Etc/GMT+6")
FIELD_TYPES = frozenset({"Text", "Number", "Decimal", "Date", "Boolean", "EmailAddress", "Phone", "Locale"})
# Marketing Cloud's default lengths when a field declares none (Text 4000 is "unlimited" in the UI).
DEFAULT_LENGTHS = {"Text": 4000, "EmailAddress": 254, "Phone": 50, "Locale": 5}
_MC_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%Y")


@dataclass(frozen=True)
class DataExtensionField:
    """One field as SOAP's ``DataExtensionField`` describes it (Name, FieldType, MaxLength, ...)."""

    name: str
    field_type: str = "Text"
    max_length: int | None = None
    is_required: bool = False
    is_primary_key: bool = False
    scale: int = 0

    def __post_init__(self) -> None:
        if self.field_type not in FIELD_TYPES:
            raise ValueError(f"unknown field type {self.field_type!r} for {self.name}")
        if self.is_primary_key and not self.is_required:
            # Marketing Cloud makes every primary key field required.
            object.__setattr__(self, "is_required", True)
        if self.max_length is None and self.field_type in DEFAULT_LENGTHS:
            object.__setattr__(self, "max_length", DEFAULT_LENGTHS[self.field_type])


@dataclass(frozen=True)
class DataExtensionSchema:
    """A data extension: its external key (``CustomerKey``), its name and its fields in order."""

    key: str
    name: str
    fields: tuple[DataExtensionField, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [f.name.lower() for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names in data extension {self.key}")
        if not any(f.is_primary_key for f in self.fields):
            raise ValueError(f"data extension {self.key} has no primary key")

    def field_named(self, name: str) -> DataExtensionField | None:
        """The field called ``name``; Marketing Cloud compares field names case-insensitively."""
        wanted = name.lower()
        return next((f for f in self.fields if f.name.lower() == wanted), None)

    @property
    def primary_key(self) -> tuple[DataExtensionField, ...]:
        return tuple(f for f in self.fields if f.is_primary_key)


def _text(name: str, length: int, **kwargs: bool) -> DataExtensionField:
    return DataExtensionField(name, "Text", length, **kwargs)


# The subscriber data extension the journey enters from and the hub writes the master ID back to.
# Lengths match what the hub accepts (integrations.marketing_cloud.mapping reads them from here).
INDIVIDUAL = DataExtensionSchema(
    key="Individual",
    name="Individual",
    fields=(
        _text("SubscriberKey", 254, is_primary_key=True),
        DataExtensionField("EmailAddress", "EmailAddress", 254),
        DataExtensionField("SubscriberId", "Number"),
        _text("FirstName", 100),
        _text("LastName", 100),
        _text("MobileNumber", 40),
        DataExtensionField("BirthDate", "Date"),
        _text("Gender", 32),
        _text("AddressLine1", 200),
        _text("City", 100),
        _text("PostalCode", 20),
        _text("StateProvince", 100),
        _text("Country", 100),
        _text("Status", 20),
        # Master IDs are UUIDs (36 characters); the column leaves room for other global ID formats.
        _text("GlobalPartyId", 64),
        DataExtensionField("CreatedDate", "Date"),
        DataExtensionField("ModifiedDate", "Date"),
    ),
)


def parse_mc_datetime(text: str) -> dt.datetime | None:
    """A date as Marketing Cloud writes or accepts it, as an aware datetime; None if it is none.

    ``M/D/YYYY h:mm:ss AM`` (and its variants without seconds or time) is Marketing Cloud system
    time. ISO 8601 with an offset is converted; without one it is taken as system time, as
    Marketing Cloud stores a date it is given without a zone as it comes **(inferred)**.
    """
    text = text.strip()
    if not text:
        return None
    if "/" in text:
        for fmt in _MC_FORMATS:
            try:
                return dt.datetime.strptime(text, fmt).replace(tzinfo=MC_SYSTEM_TIME)
            except ValueError:
                continue
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=MC_SYSTEM_TIME) if parsed.tzinfo is None else parsed


def format_mc_datetime(value: dt.datetime) -> str:
    """``value`` in Marketing Cloud system time, formatted as row reads show dates: ``6/23/2024 9:05:00 PM``."""
    local = value.astimezone(MC_SYSTEM_TIME) if value.tzinfo else value
    hour, half = local.hour % 12 or 12, "PM" if local.hour >= 12 else "AM"
    return f"{local.month}/{local.day}/{local.year} {hour}:{local.minute:02d}:{local.second:02d} {half}"
