"""The CIM Individual: parsing incoming payloads and rendering golden records.

Shape as the MuleSoft accelerators emit it (see shared reference §2.2): camelCase
fields, ``contactPoints`` and ``externalIds`` whose type may be a string or a
one-element list. In process-level messages ``id`` is the master ID.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.utils.dateparse import parse_date, parse_datetime

from customers.choices import MASTER_ID_TYPES, ContactPointKind
from customers.normalize import address_key, clean_text, e164, normalize_email, normalize_phone


class CimValidationError(ValueError):
    """A CIM payload that cannot be accepted; ``field`` is the JSON path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class EmailPoint:
    email_address: str
    value_key: str


@dataclass(frozen=True)
class PhonePoint:
    telephone_number: str
    value_key: str


@dataclass(frozen=True)
class AddressPoint:
    address_line1: str
    city_name: str
    postal_code_text: str
    state_province_name: str
    country_name: str
    value_key: str


@dataclass(frozen=True)
class ExternalId:
    external_id: str
    external_id_type: str
    status: str = "VALID"


@dataclass
class SourceIndividual:
    """A parsed CIM Individual as one source system sent it."""

    salutation: str = ""
    first_name: str = ""
    middle_name: str = ""
    last_name: str = ""
    name_suffix: str = ""
    birth_date: dt.date | None = None
    gender: str = ""
    do_not_market_since: dt.datetime | None = None
    emails: list[EmailPoint] = field(default_factory=list)
    phones: list[PhonePoint] = field(default_factory=list)
    addresses: list[AddressPoint] = field(default_factory=list)
    external_ids: list[ExternalId] = field(default_factory=list)
    system_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def master_ids(self) -> list[str]:
        return [x.external_id for x in self.external_ids if x.external_id_type in MASTER_ID_TYPES]

    def external_id_for(self, system: str) -> str:
        for x in self.external_ids:
            if x.external_id_type == system:
                return x.external_id
        return ""


# Dates and date-times outside these are refused (birth dates also after today); see check_datetime_range.
MIN_YEAR = 1900
MAX_YEAR = 2100
MAX_UTC_OFFSET = dt.timedelta(hours=14)
# A person has a handful of addresses, numbers and emails: more is a feed bug, and an event
# that large only slows every match it takes part in.
MAX_CONTACT_POINTS = 50
MAX_EXTERNAL_IDS = 50
# A source record's ID (``id``, an ``externalId``) as a cross reference holds it; longer ones
# would be cut there, and two records differing only beyond it would become one.
MAX_ID_LENGTH = 255

NAME_FIELD_MAX_LENGTH = {
    "salutation": 40,
    "firstName": 100,
    "middleName": 100,
    "lastName": 100,
    "nameSuffix": 40,
    "gender": 32,
}


def _type_of(value: Any, path: str) -> str:
    """contactPointType / externalIdType: a string or a one-element list of one."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise CimValidationError(path, "must be a non-empty string (or a one-element list of one)")
    return value.strip()


def _text(data: dict[str, Any], key: str, path: str, max_length: int = 200) -> str:
    """A text field: a string, or an integer (taken as its digits); anything else is refused.

    Other numbers are refused because the stored event would not say the same: jsonb keeps
    numbers as PostgreSQL numerics, so ``1e101`` (six characters as Python writes it) comes
    back as a 102-digit integer, and the resolver would parse another value than intake did.
    An integer comes back as it was sent; integers stay accepted because stored source records
    holding them are parsed again whenever their golden record is recomputed.
    """
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise CimValidationError(f"{path}.{key}", "must be a string")
    text = clean_text(value)
    if len(text) > max_length:
        raise CimValidationError(f"{path}.{key}", f"must be at most {max_length} characters")
    return text


def _normalized_point(
    point: dict[str, Any], key: str, path: str, max_length: int, normalize: Any, kind: str
) -> tuple[str, str]:
    """(value as sent, normalised key) of a contact point's required field."""
    raw = _text(point, key, path, max_length)
    if not raw:
        raise CimValidationError(f"{path}.{key}", f"is required for a {kind}")
    try:
        return raw, normalize(raw)
    except ValueError as exc:
        raise CimValidationError(f"{path}.{key}", str(exc)) from None


def phone_key(value: str) -> str:
    """A telephone number's matching key: E.164 when it parses (``customers.matching.e164``)."""
    return e164(normalize_phone(value))


def parse_cim_date(value: Any, path: str) -> dt.date | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise CimValidationError(path, "must be a date (YYYY-MM-DD)")
    text = value.strip()
    try:
        parsed = parse_date(text[:10]) if len(text) >= 10 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise CimValidationError(path, f"must be a date (YYYY-MM-DD), not {text[:40]!r}")
    if parsed.year < MIN_YEAR or parsed > dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1):
        raise CimValidationError(path, f"is out of range ({MIN_YEAR}-01-01 to today)")
    return parsed


def parse_cim_datetime(value: Any, path: str) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise CimValidationError(path, "must be an ISO 8601 date-time")
    try:
        parsed = parse_datetime(value.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        date_only = None
        with contextlib.suppress(ValueError):
            date_only = parse_date(value.strip())
        if date_only is None:
            raise CimValidationError(path, f"must be an ISO 8601 date-time, not {value[:40]!r}")
        parsed = dt.datetime.combine(date_only, dt.time())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return check_datetime_range(parsed, path)


def check_datetime_range(value: dt.datetime, path: str) -> dt.datetime:
    """An aware date-time within the years 1900-2100 and ±14 h of UTC, else CimValidationError.

    Anything else is no real change date, and some of it cannot even be converted to UTC
    (year 1 at +14:00) or read back from PostgreSQL: refused at intake, it is never
    accepted and dead-lettered later.
    """
    offset = value.utcoffset()
    if offset is None or abs(offset) > MAX_UTC_OFFSET:
        raise CimValidationError(path, "must have a UTC offset within ±14:00")
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise CimValidationError(path, f"is out of range (years {MIN_YEAR}-{MAX_YEAR})")
    return value


def parse_individual(data: Any, path: str = "individual") -> SourceIndividual:
    """Validate and parse a CIM Individual; raises CimValidationError naming the field."""
    if not isinstance(data, dict):
        raise CimValidationError(path, "must be an object")
    party_type = data.get("partyType", "Individual")
    if party_type not in (None, "Individual"):
        raise CimValidationError(f"{path}.partyType", "must be 'Individual'")
    result = SourceIndividual(raw=data)
    result.salutation = _text(data, "salutation", path, NAME_FIELD_MAX_LENGTH["salutation"])
    result.first_name = _text(data, "firstName", path, NAME_FIELD_MAX_LENGTH["firstName"])
    result.middle_name = _text(data, "middleName", path, NAME_FIELD_MAX_LENGTH["middleName"])
    result.last_name = _text(data, "lastName", path, NAME_FIELD_MAX_LENGTH["lastName"])
    result.name_suffix = _text(data, "nameSuffix", path, NAME_FIELD_MAX_LENGTH["nameSuffix"])
    result.gender = _text(data, "gender", path, NAME_FIELD_MAX_LENGTH["gender"])
    result.birth_date = parse_cim_date(data.get("birthDate"), f"{path}.birthDate")
    result.do_not_market_since = parse_cim_datetime(
        data.get("doNotMarketFromUpdateDate"), f"{path}.doNotMarketFromUpdateDate"
    )
    system_id = data.get("id")
    if system_id is not None and (isinstance(system_id, bool) or not isinstance(system_id, str | int)):
        raise CimValidationError(f"{path}.id", "must be a string")
    result.system_id = clean_text(system_id)
    if len(result.system_id) > MAX_ID_LENGTH:
        raise CimValidationError(f"{path}.id", f"must be at most {MAX_ID_LENGTH} characters")

    points = data.get("contactPoints") or []
    if not isinstance(points, list):
        raise CimValidationError(f"{path}.contactPoints", "must be a list")
    if len(points) > MAX_CONTACT_POINTS:
        raise CimValidationError(f"{path}.contactPoints", f"at most {MAX_CONTACT_POINTS} contact points")
    seen: set[tuple[str, str]] = set()
    for i, point in enumerate(points):
        p = f"{path}.contactPoints[{i}]"
        if not isinstance(point, dict):
            raise CimValidationError(p, "must be an object")
        kind = _type_of(point.get("contactPointType"), f"{p}.contactPointType")
        if kind == ContactPointKind.EMAIL:
            raw_email, key = _normalized_point(point, "emailAddress", p, 320, normalize_email, kind)
            if (kind, key) not in seen:
                result.emails.append(EmailPoint(raw_email, key))
        elif kind == ContactPointKind.PHONE:
            raw_phone, key = _normalized_point(point, "telephoneNumber", p, 40, phone_key, kind)
            if (kind, key) not in seen:
                result.phones.append(PhonePoint(raw_phone, key))
        elif kind == ContactPointKind.ADDRESS:
            fields = {
                "address_line1": _text(point, "addressLine1", p),
                "city_name": _text(point, "cityName", p, 100),
                "postal_code_text": _text(point, "postalCodeText", p, 20),
                "state_province_name": _text(point, "stateProvinceName", p, 100),
                "country_name": _text(point, "countryName", p, 100),
            }
            if not any(fields.values()):
                continue
            key = address_key(
                fields["address_line1"], fields["city_name"], fields["postal_code_text"], fields["country_name"]
            )
            if (kind, key) not in seen:
                result.addresses.append(AddressPoint(value_key=key, **fields))
        else:
            raise CimValidationError(
                f"{p}.contactPointType", "must be ContactPointEmail, ContactPointPhone or ContactPointAddress"
            )
        seen.add((kind, key))

    ids = data.get("externalIds") or []
    if not isinstance(ids, list):
        raise CimValidationError(f"{path}.externalIds", "must be a list")
    if len(ids) > MAX_EXTERNAL_IDS:
        raise CimValidationError(f"{path}.externalIds", f"at most {MAX_EXTERNAL_IDS} external IDs")
    for i, item in enumerate(ids):
        p = f"{path}.externalIds[{i}]"
        if not isinstance(item, dict):
            raise CimValidationError(p, "must be an object")
        value = _text(item, "externalId", p, MAX_ID_LENGTH)
        if not value:
            continue  # the accelerator emits empty placeholders; they identify nothing
        id_type = _type_of(item.get("externalIdType"), f"{p}.externalIdType").upper()
        status = _text(item, "status", p, 10).upper() or "VALID"
        result.external_ids.append(ExternalId(value, id_type, status))
    return result


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------
def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


CONTACT_POINT_COLUMNS = (
    "id",
    "kind",
    "is_primary",
    "active_from_date",
    "value_key",
    "email_address",
    "telephone_number",
    "address_line1",
    "city_name",
    "postal_code_text",
    "state_province_name",
    "country_name",
)
CROSS_REFERENCE_COLUMNS = (
    "id",
    "system",
    "external_id",
    "status",
    "last_seen_at",
    "writeback_state",
    "written_at",
    "writeback_error",
)


SUBSCRIPTION_CONSENT_COLUMNS = ("system", "subscription_id", "channel", "status", "effective_from", "capture_source")


def render_subscription_consents(consents: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Consent per list and channel, under the names of Salesforce's CommSubscriptionConsent.

    CIM 1.0 has no consent entity; the list itself is named as CIM names any record of another
    system (``externalSourceId``, ``externalRecordId``).
    """
    return [
        {
            "communicationSubscription": {
                "externalSourceId": c["system"],
                "externalRecordId": c["subscription_id"],
            },
            "engagementChannelType": c["channel"],
            "privacyConsentStatus": c["status"],
            "effectiveFromDate": _iso(c["effective_from"]),
            "consentCapturedSource": c["capture_source"] or None,
        }
        for c in consents
    ]


def render_cim(
    record: Mapping[str, Any],
    contact_points: Iterable[Mapping[str, Any]],
    cross_references: Iterable[Mapping[str, Any]],
    subscription_consents: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A golden record as a process-level CIM Individual (``id`` = master ID), from plain values.

    ``record`` holds the golden record's columns, ``contact_points``, ``cross_references``
    and ``subscription_consents`` theirs (``CONTACT_POINT_COLUMNS``, ``CROSS_REFERENCE_COLUMNS``,
    ``SUBSCRIPTION_CONSENT_COLUMNS``), in the order they are to be listed.
    """
    points: list[dict[str, Any]] = []
    for cp in contact_points:
        item: dict[str, Any] = {
            "contactPointType": cp["kind"],
            "id": str(cp["id"]),
            "primaryFlag": cp["is_primary"],
            "activeFromDate": _iso(cp["active_from_date"]),
        }
        if cp["kind"] == ContactPointKind.EMAIL:
            item["emailAddress"] = cp["email_address"]
        elif cp["kind"] == ContactPointKind.PHONE:
            item["telephoneNumber"] = cp["telephone_number"]
            item["formattedE164PhoneNumber"] = cp["value_key"] if cp["value_key"].startswith("+") else None
        else:
            item.update(
                addressLine1=cp["address_line1"],
                cityName=cp["city_name"],
                postalCodeText=cp["postal_code_text"],
                stateProvinceName=cp["state_province_name"],
                countryName=cp["country_name"],
            )
        points.append(item)
    external_ids = [
        {
            "id": str(x["id"]),
            "externalId": x["external_id"],
            "externalIdType": x["system"],
            "status": x["status"],
            "statusLastChangedDate": _iso(x["last_seen_at"]),
            "writeback": {
                "state": x["writeback_state"],
                "writtenAt": _iso(x["written_at"]),
                "error": x["writeback_error"] or None,
            },
        }
        for x in cross_references
    ]
    person_name = " ".join(part for part in (record["first_name"], record["middle_name"], record["last_name"]) if part)
    return {
        "id": record["master_id"],
        "partyType": "Individual",
        "salutation": record["salutation"] or None,
        "personName": person_name or None,
        "firstName": record["first_name"] or None,
        "middleName": record["middle_name"] or None,
        "lastName": record["last_name"] or None,
        "nameSuffix": record["name_suffix"] or None,
        "birthDate": _iso(record["birth_date"]),
        "gender": record["gender"] or None,
        "doNotMarketFromUpdateDate": _iso(record["do_not_market_since"]),
        "communicationSubscriptionConsents": render_subscription_consents(subscription_consents),
        "contactPoints": points,
        "externalIds": external_ids,
        "auditInfo": {
            "createdDate": _iso(record["created_at"]),
            "updatedDate": _iso(record["updated_at"]),
            "isDeleted": False,
        },
    }


RECORD_COLUMNS = (
    "master_id",
    "salutation",
    "first_name",
    "middle_name",
    "last_name",
    "name_suffix",
    "birth_date",
    "gender",
    "do_not_market_since",
    "created_at",
    "updated_at",
)


def render_individual(individual: Any) -> dict[str, Any]:
    """A golden record (model instance) as a process-level CIM Individual.

    Expects ``contact_points``, ``cross_references`` and ``subscription_consents`` prefetched
    when rendering many.
    """
    return render_cim(
        {name: getattr(individual, name) for name in RECORD_COLUMNS},
        (
            {name: getattr(cp, "pk" if name == "id" else name) for name in CONTACT_POINT_COLUMNS}
            for cp in individual.contact_points.all()
        ),
        (
            {name: getattr(x, "pk" if name == "id" else name) for name in CROSS_REFERENCE_COLUMNS}
            for x in individual.cross_references.all()
        ),
        (
            {name: getattr(c, name) for name in SUBSCRIPTION_CONSENT_COLUMNS}
            for c in individual.subscription_consents.all()
        ),
    )
