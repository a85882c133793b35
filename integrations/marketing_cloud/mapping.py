"""Marketing Cloud subscriber data (journey in-arguments) -> CIM Individual.

Mapping after the accelerator's Salesforce Marketing System API (shared reference
§1.4, §5.B): SubscriberKey is the cross reference's external ID, SubscriberId the
system's own numeric ID (CIM ``id``, kept on the cross reference apart from the key;
``id`` is null when the subscriber data carries none, never the key in its place),
GlobalPartyId the master ID (externalIdType MDM), and a Status of Unsubscribed or
Held means do-not-market from the change date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from customers.cim import (
    CimValidationError,
    SourceIndividual,
    check_datetime_range,
    parse_cim_date,
    parse_cim_datetime,
    parse_individual,
)
from customers.normalize import clean_text, normalize_email
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud.schema import INDIVIDUAL, parse_mc_datetime

IN_ARGUMENTS = (
    "SubscriberKey",
    "EmailAddress",
    "SubscriberId",
    "FirstName",
    "LastName",
    "MobileNumber",
    "BirthDate",
    "Gender",
    "AddressLine1",
    "City",
    "PostalCode",
    "StateProvince",
    "Country",
    "Status",
    "GlobalPartyId",
    "CreatedDate",
    "ModifiedDate",
)
REQUIRED = ("SubscriberKey", "EmailAddress")
SUBSCRIBER_STATUSES = {
    "active": "Active",
    "bounced": "Bounced",
    "held": "Held",
    "unsubscribed": "Unsubscribed",
    "deleted": "Deleted",
}
NOT_MARKETABLE = {"Held", "Unsubscribed"}
# Text lengths as the data extension declares them; a subscriber ID is a number there, kept as text here.
_MAX_LENGTH = {
    column.name: column.max_length
    for column in INDIVIDUAL.fields
    if column.max_length is not None and column.field_type in ("Text", "EmailAddress")
} | {"SubscriberId": 40}


def mc_datetime(value: str, field: str) -> dt.datetime | None:
    """ISO 8601, or Marketing Cloud's own ``M/D/YYYY h:mm:ss AM`` in its system time (UTC-6, no DST).

    Row reads and Journey Builder's data bindings give data extension dates in that format and
    time (shared reference §6); reading them as UTC would put every change six hours in the past.
    """
    text = value.strip()
    if "/" not in text:  # no Marketing Cloud date: ISO 8601 or nothing
        return parse_cim_datetime(text, field)
    parsed = parse_mc_datetime(text)
    if parsed is None:
        return parse_cim_datetime(text, field)
    return check_datetime_range(parsed, field)


# In-argument names as an activity may have saved them: ours, or a data extension column's
# spelling (``emailaddress``, ``EMAILADDRESS``). Journey Builder keeps whatever name the activity
# saved, and binds values case-sensitively, so only the names are folded here.
_CANONICAL_NAMES = {name.casefold(): name for name in IN_ARGUMENTS}


def canonical_name(name: str) -> str:
    """Our in-argument name for ``name`` compared without case; other names are kept as they are."""
    return _CANONICAL_NAMES.get(name.casefold(), name)


def merge_in_arguments(in_arguments: Any) -> dict[str, Any]:
    """Journey Builder sends a list of one-key objects; merge them under our names (later keys win)."""
    if not isinstance(in_arguments, list):
        raise CimValidationError("inArguments", "must be a list of objects")
    merged: dict[str, Any] = {}
    for i, item in enumerate(in_arguments):
        if not isinstance(item, dict):
            raise CimValidationError(f"inArguments[{i}]", "must be an object")
        for name, value in item.items():
            merged[canonical_name(name) if isinstance(name, str) else name] = value
    return merged


def subscriber_to_cim(args: dict[str, Any], *, prefix: str = "inArguments") -> dict[str, Any]:
    """Validate subscriber fields and build the CIM Individual; errors name the field."""
    return subscriber_to_source(args, prefix=prefix)[0]


def subscriber_to_source(
    args: dict[str, Any], *, prefix: str = "inArguments", amend: Callable[[dict[str, Any]], None] | None = None
) -> tuple[dict[str, Any], SourceIndividual]:
    """``subscriber_to_cim``, with the CIM Individual as the engine reads it, parsed once.

    ``amend`` may change the CIM before it is parsed (the backfill adds what an export's own
    columns say); its errors are its own, the parse's name the in-argument they come from.
    """
    values: dict[str, str] = {}
    for name in IN_ARGUMENTS:
        raw = args.get(name)
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise CimValidationError(f"{prefix}.{name}", "must be a string")
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)  # a number column read as 501.0
        text = clean_text(raw)
        # An unresolved Journey Builder binding arrives as the literal template.
        if text.startswith("{{") and text.endswith("}}"):
            text = ""
        if len(text) > _MAX_LENGTH.get(name, 64):
            raise CimValidationError(f"{prefix}.{name}", f"must be at most {_MAX_LENGTH.get(name, 64)} characters")
        if text:
            values[name] = text
    for name in REQUIRED:
        if not values.get(name):
            raise CimValidationError(f"{prefix}.{name}", "is required")
    subscriber_id = values.get("SubscriberId", "")
    if subscriber_id and not (subscriber_id.isascii() and subscriber_id.isdigit() and int(subscriber_id) > 0):
        # ENS names subscribers by this number: a key bound here by mistake would make the
        # hub take someone else's unsubscribes for this person.
        raise CimValidationError(
            f"{prefix}.SubscriberId", "must be Marketing Cloud's numeric SubscriberID (not the SubscriberKey)"
        )
    try:
        normalize_email(values["EmailAddress"])
    except ValueError as exc:
        raise CimValidationError(f"{prefix}.EmailAddress", str(exc)) from None

    status = ""
    if "Status" in values:
        status = SUBSCRIBER_STATUSES.get(values["Status"].lower(), "")
        if not status:
            raise CimValidationError(f"{prefix}.Status", "must be Active, Bounced, Held, Unsubscribed or Deleted")
    birth_date = None
    if "BirthDate" in values:
        raw_birth = values["BirthDate"]
        parsed = None
        if "/" in raw_birth:
            parsed_dt = mc_datetime(raw_birth, f"{prefix}.BirthDate")
            parsed = parsed_dt.date() if parsed_dt else None
            parsed = parse_cim_date(parsed.isoformat(), f"{prefix}.BirthDate") if parsed else None
        else:
            parsed = parse_cim_date(raw_birth, f"{prefix}.BirthDate")
        birth_date = parsed.isoformat() if parsed else None
    created = mc_datetime(values["CreatedDate"], f"{prefix}.CreatedDate") if "CreatedDate" in values else None
    modified = mc_datetime(values["ModifiedDate"], f"{prefix}.ModifiedDate") if "ModifiedDate" in values else None

    contact_points: list[dict[str, Any]] = [
        {"contactPointType": "ContactPointEmail", "emailAddress": values["EmailAddress"]}
    ]
    if values.get("MobileNumber"):
        contact_points.append({"contactPointType": "ContactPointPhone", "telephoneNumber": values["MobileNumber"]})
    if any(values.get(k) for k in ("AddressLine1", "City", "PostalCode", "Country")):
        contact_points.append(
            {
                "contactPointType": "ContactPointAddress",
                "addressLine1": values.get("AddressLine1"),
                "cityName": values.get("City"),
                "postalCodeText": values.get("PostalCode"),
                "stateProvinceName": values.get("StateProvince"),
                "countryName": values.get("Country"),
            }
        )
    external_ids: list[dict[str, Any]] = [
        {"externalId": values["SubscriberKey"], "externalIdType": MARKETING_CLOUD, "status": "VALID"}
    ]
    if values.get("GlobalPartyId"):
        external_ids.append({"externalId": values["GlobalPartyId"], "externalIdType": "MDM", "status": "VALID"})
    first, last = values.get("FirstName", ""), values.get("LastName", "")
    cim: dict[str, Any] = {
        "id": subscriber_id or None,
        "partyType": "Individual",
        "personName": " ".join(p for p in (first, last) if p) or None,
        "firstName": first or None,
        "lastName": last or None,
        "birthDate": birth_date,
        "gender": values.get("Gender"),
        "contactPoints": contact_points,
        "externalIds": external_ids,
        "auditInfo": {
            "createdDate": created.isoformat() if created else None,
            "updatedDate": modified.isoformat() if modified else None,
        },
        "subscriberStatus": status or None,
    }
    if status in NOT_MARKETABLE:
        cim["doNotMarketFromUpdateDate"] = (modified or created or dt.datetime.now(dt.UTC)).isoformat()
    if amend is not None:
        amend(cim)
    try:
        # What the resolver would refuse (a mobile number that is no telephone number) is refused
        # now, instead of accepted and dead-lettered later.
        source = parse_individual(cim, prefix)
    except CimValidationError as exc:
        raise CimValidationError(_in_argument_of(exc.field, prefix, values), exc.message) from None
    return cim, source


# The CIM fields subscriber_to_cim fills, by the in-argument each is made of.
_IN_ARGUMENT_OF = {
    "firstName": "FirstName",
    "lastName": "LastName",
    "birthDate": "BirthDate",
    "gender": "Gender",
    "emailAddress": "EmailAddress",
    "telephoneNumber": "MobileNumber",
    "addressLine1": "AddressLine1",
    "cityName": "City",
    "postalCodeText": "PostalCode",
    "stateProvinceName": "StateProvince",
    "countryName": "Country",
    "doNotMarketFromUpdateDate": "ModifiedDate",
}


def _in_argument_of(field: str, prefix: str, values: dict[str, str]) -> str:
    """The in-argument a CIM field's error (``row.contactPoints[1].telephoneNumber``) is about."""
    name = field.rsplit(".", 1)[-1]
    if name == "id":
        argument = "SubscriberId" if values.get("SubscriberId") else "SubscriberKey"
    elif name == "externalId":
        argument = "GlobalPartyId" if ".externalIds[1]." in field else "SubscriberKey"
    else:
        argument = _IN_ARGUMENT_OF.get(name, "")
    return f"{prefix}.{argument}" if argument else field
