"""The CIM Individual as an OpenAPI 3.0 schema: what ``customers.cim.parse_individual`` accepts.

The API's schema (``GET /api/schema/``) shows it for ``individual`` in ``POST /api/v1/events``, so an
integrator sees the fields, their types and limits, and the three contact point kinds without
reading the hub's code. The limits are the parser's own constants; ``tests/test_cim_schema.py``
generates individuals from this schema and checks that the parser accepts them, and that the
parser's refusals of hand-picked bad input are refusals the schema makes too.

Two rules of the parser cannot be written in OpenAPI 3.0 and are stated in the descriptions
instead: a birth date lies between 1900-01-01 and today, and a date-time between the years
1900 and 2100 with a UTC offset within ±14:00.
"""

from __future__ import annotations

from typing import Any

from customers.choices import ContactPointKind
from customers.cim import (
    MAX_CONTACT_POINTS,
    MAX_EXTERNAL_IDS,
    MAX_ID_LENGTH,
    MAX_UTC_OFFSET,
    MAX_YEAR,
    MIN_YEAR,
    NAME_FIELD_MAX_LENGTH,
)

COMPONENT_NAME = "CimIndividual"
COMPONENT_REF = {"$ref": f"#/components/schemas/{COMPONENT_NAME}"}

# The longest values parse_individual keeps (its _text and _normalized_point limits).
EMAIL_MAX_LENGTH = 320
PHONE_MAX_LENGTH = 40
ADDRESS_LINE_MAX_LENGTH = 200
ADDRESS_FIELD_MAX_LENGTH = {"cityName": 100, "postalCodeText": 20, "stateProvinceName": 100, "countryName": 100}
EXTERNAL_ID_STATUS_MAX_LENGTH = 10

# A telephone number as customers.normalize.normalize_phone takes it: 4 to 20 digits, an optional
# leading + (or 00, read as +), at most two of space . - / ( ) between digits.
_SEP = r"[ .\-/()]{0,2}"
PHONE_PATTERN = (
    rf"^\(?(?:(?:\+|00)[0-9](?:{_SEP}[0-9]){{3,19}}"
    rf"|[1-9](?:{_SEP}[0-9]){{3,19}}"
    rf"|0[1-9](?:{_SEP}[0-9]){{2,18}})$"
)

_OFFSET_HOURS = int(MAX_UTC_OFFSET.total_seconds() // 3600)
DATE_TIME_RULE = f"ISO 8601; years {MIN_YEAR}-{MAX_YEAR}, UTC offset within ±{_OFFSET_HOURS:02d}:00 (none means UTC)"


def _text(max_length: int, description: str) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "nullable": True, "description": description}


def _type_name(kind: str, description: str) -> dict[str, Any]:
    """A ``contactPointType``/``externalIdType``: a string, or a one-element list of one (as the accelerator sends)."""
    # A system code as the hub names sources (integrations' SYSTEM_CODE), in either case.
    name: dict[str, Any] = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_]{0,39}$"}
    if kind:
        name = {"type": "string", "enum": [kind]}
    return {
        "description": description,
        "oneOf": [name, {"type": "array", "items": name, "minItems": 1, "maxItems": 1}],
    }


def _contact_point(kind: str, title: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "title": title,
        "required": ["contactPointType", *required],
        "properties": {
            "contactPointType": _type_name(kind, f'`{kind}`, or `["{kind}"]`.'),
            "id": {"type": "string", "nullable": True, "description": "Not read: contact points are the hub's."},
            "activeFromDate": {"type": "string", "nullable": True, "description": "Not read."},
            **properties,
        },
    }


EMAIL_POINT = _contact_point(
    ContactPointKind.EMAIL,
    "ContactPointEmail",
    {
        "emailAddress": {
            "type": "string",
            "format": "email",
            "minLength": 3,
            "maxLength": EMAIL_MAX_LENGTH,
            "description": "An email address (internationalised local parts allowed, at most 64 characters). "
            "Matched case-folded; stored as sent.",
        }
    },
    ["emailAddress"],
)
PHONE_POINT = _contact_point(
    ContactPointKind.PHONE,
    "ContactPointPhone",
    {
        "telephoneNumber": {
            "type": "string",
            "maxLength": PHONE_MAX_LENGTH,
            "pattern": PHONE_PATTERN,
            "description": "4 to 20 digits, a leading + (or 00) for an international number; spaces, dots, "
            "dashes, slashes and parentheses are dropped. Matched in E.164.",
        }
    },
    ["telephoneNumber"],
)
ADDRESS_POINT = _contact_point(
    ContactPointKind.ADDRESS,
    "ContactPointAddress",
    {
        "addressLine1": _text(ADDRESS_LINE_MAX_LENGTH, "Street and number."),
        **{name: _text(limit, "") for name, limit in ADDRESS_FIELD_MAX_LENGTH.items()},
        "geoLatitude": {"type": "number", "nullable": True, "description": "Not read."},
        "geoLongitude": {"type": "number", "nullable": True, "description": "Not read."},
    },
    [],
)
for _name, _description in (
    ("cityName", "City."),
    ("postalCodeText", "Postal code (a US ZIP+4 is matched on its five-digit ZIP)."),
    ("stateProvinceName", "State or province."),
    ("countryName", "Country name or ISO code ('United Kingdom', 'GB')."),
):
    ADDRESS_POINT["properties"][_name]["description"] = _description
ADDRESS_POINT["description"] = "An address with every field empty is skipped."

EXTERNAL_ID = {
    "type": "object",
    "properties": {
        "externalId": {
            "type": "string",
            "maxLength": MAX_ID_LENGTH,
            "nullable": True,
            "description": "The ID in that system; an empty one is skipped (the accelerator sends placeholders).",
        },
        "externalIdType": _type_name(
            "",
            "The system's code (upper-cased): the sending source's own, or MDM / GLOBAL for a master ID "
            "the sender already knows. A string, or a one-element list of one.",
        ),
        "status": _text(EXTERNAL_ID_STATUS_MAX_LENGTH, "VALID (the default) or another status; upper-cased."),
        "id": {"type": "string", "nullable": True, "description": "Not read."},
        "statusLastChangedDate": {"type": "string", "nullable": True, "description": "Not read."},
    },
    "required": ["externalIdType"],
}

INDIVIDUAL_EXAMPLE: dict[str, Any] = {
    "id": "POS-100245",
    "partyType": "Individual",
    "salutation": "Ms.",
    "firstName": "Jane",
    "lastName": "Doe",
    "birthDate": "1990-01-31",
    "gender": "Female",
    "contactPoints": [
        {"contactPointType": ["ContactPointEmail"], "emailAddress": "jane.doe@example.com"},
        {"contactPointType": "ContactPointPhone", "telephoneNumber": "+1 415 555 0100"},
        {
            "contactPointType": ["ContactPointAddress"],
            "addressLine1": "1 Main St",
            "cityName": "San Francisco",
            "postalCodeText": "94105",
            "stateProvinceName": "CA",
            "countryName": "US",
        },
    ],
    "externalIds": [{"externalId": "POS-100245", "externalIdType": ["POS"], "status": "VALID"}],
}

INDIVIDUAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "CIM Individual",
    "description": "A person as the source system holds them, in the MuleSoft accelerators' CIM shape. Its `id` "
    "(or the `externalId` whose type is the event's source) is the source record's ID: the cross reference. "
    "Fields the hub does not read are ignored; fields it reads are checked and a bad one is named in the "
    "400's `errors` (`events[i].individual.<path>`).",
    "properties": {
        "id": {
            "type": "string",
            "maxLength": MAX_ID_LENGTH,
            "nullable": True,
            "description": "The source record's ID in the sending system (an integer is taken as its digits).",
        },
        "partyType": {"type": "string", "enum": ["Individual"], "nullable": True, "default": "Individual"},
        "salutation": _text(NAME_FIELD_MAX_LENGTH["salutation"], "Ms., Mr., Dr., ..."),
        "personName": {"type": "string", "nullable": True, "description": "Not read: the hub derives it."},
        "firstName": _text(NAME_FIELD_MAX_LENGTH["firstName"], "Given name."),
        "middleName": _text(NAME_FIELD_MAX_LENGTH["middleName"], "Middle name or initial."),
        "lastName": _text(NAME_FIELD_MAX_LENGTH["lastName"], "Family name."),
        "nameSuffix": _text(NAME_FIELD_MAX_LENGTH["nameSuffix"], "Jr, Sr, III, ... (tells a father from his son)."),
        "gender": _text(NAME_FIELD_MAX_LENGTH["gender"], "As the source holds it (Female, Male, F, M, ...)."),
        "birthDate": {
            "type": "string",
            "format": "date",
            "nullable": True,
            "description": f"YYYY-MM-DD, from {MIN_YEAR}-01-01 to today (a date-time is read as its date).",
        },
        "doNotMarketFromUpdateDate": {
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": f"Since when the person must not be marketed to. {DATE_TIME_RULE}.",
        },
        "contactPoints": {
            "type": "array",
            "maxItems": MAX_CONTACT_POINTS,
            "nullable": True,
            "description": "Emails, telephone numbers and addresses; a repeat of one already listed is dropped.",
            "items": {"oneOf": [EMAIL_POINT, PHONE_POINT, ADDRESS_POINT]},
        },
        "externalIds": {
            "type": "array",
            "maxItems": MAX_EXTERNAL_IDS,
            "nullable": True,
            "items": EXTERNAL_ID,
        },
    },
    "example": INDIVIDUAL_EXAMPLE,
}
