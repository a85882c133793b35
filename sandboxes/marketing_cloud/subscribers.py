"""The sandbox's All Subscribers and Contacts: SOAP ``Retrieve``/``Update`` of ``Subscriber``, contact deletes.

What is emulated, and from where (Salesforce's Marketing Cloud developer documentation unless
said otherwise):

- ``Retrieve`` of ``Subscriber`` ("Retrieve a Subscriber"; the ``Subscriber`` object reference):
  the properties the hub asks for (``ID``, ``SubscriberKey``, ``EmailAddress``, ``Status``,
  ``ModifiedDate``, ``UnsubscribedDate``) and ``CreatedDate``, ``EmailTypePreference``,
  ``Client.ID``; any other property is refused as a tenant refuses one, with ``OverallStatus``
  "Error: The Request Property(s) X do not match with the fields of Subscriber retrieve" (the
  text tenants answer for data extensions, which the sandbox already uses). Filters: a
  ``SimpleFilterPart`` on ``ModifiedDate`` (``greaterThan``/``lessThan`` with a ``DateValue``)
  or on ``SubscriberKey``/``EmailAddress`` (``equals``/``IN`` with ``Value``). More matches than a
  page answer ``MoreDataAvailable`` with a ``RequestID``; a ``RetrieveRequest`` holding only
  ``ContinueRequest`` with that ID reads the next page ("Retrieve More than 2500 Records Using
  the ContinueRequest Property"). Dates are Marketing Cloud system time without an offset
  (UTC-6, shared reference §6), with milliseconds, as the tenant's SOAP answers show them.
- ``Update`` of ``Subscriber`` ("Update Subscriber Attributes using the Update Method", whose
  sample unsubscribes a subscriber; the ``UpdateResult`` object reference): ``UpdateRequest``
  with ``Options`` and ``Objects xsi:type="Subscriber"`` naming ``SubscriberKey`` (or
  ``EmailAddress``) and ``Status``; the answer is ``UpdateResponse`` with one ``Results`` per
  object in order (``StatusCode`` OK/Error, ``StatusMessage``, ``OrdinalID``, ``ErrorCode`` on an
  error, ``Object``), ``RequestID`` and ``OverallStatus`` (OK, "Has Errors", or "Error"). A
  property of the object the sandbox does not emulate, or a Status that is no
  ``SubscriberStatus`` value, is a ``soap:Client`` fault "Server was unable to read request."
  as the tenant's XML deserialiser answers unreadable requests. An unknown subscriber is an
  Error result; its message and code (12002) are the sandbox's choice (**inferred**: the
  documentation names no code for it).
- ``POST /contacts/v1/contacts/actions/delete?type=keys`` ("DeleteByContactKeys"): body
  ``{"values": [...], "DeleteOperationType": "ContactAndAttributes"}`` (names matched without
  case, as the reference spells them ``Values``); the answer's shape is a recorded tenant answer
  (``operationInitiated``, ``operationID``, ``requestServiceMessageID``, ``responseDateTime``,
  ``hasErrors``, ``resultMessages``, ``serviceMessageID``; the Salesforce Marketing Cloud
  Postman collection's saved response, developers.qodex.ai copy). ``AttributesOnly`` is
  "reserved for future use" and refused.
- ``GET /contacts/v1/contacts/actions/delete/status?operationID=`` ("ContactsDeleteStatus"):
  ``operation`` with ``operationID``, ``deleteType``, ``status`` and the documented fields;
  once the test says the operation finished, ``backgroundOperationsSummary`` with
  ``backgroundOperationStatusID`` (Completed, Aborted or Invalid are final).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET  # noqa: S405 - builds answers; parsing is defusedxml's
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from sandboxes.marketing_cloud import soap

SYSTEM_TIME = timezone(timedelta(hours=-6))
SUBSCRIBER_STATUSES = ("Active", "Bounced", "Held", "Unsubscribed", "Deleted")
SUBSCRIBER_PROPERTIES = (
    "ID",
    "SubscriberKey",
    "EmailAddress",
    "Status",
    "CreatedDate",
    "ModifiedDate",
    "UnsubscribedDate",
    "EmailTypePreference",
    "Client.ID",
)
# What an Update of a Subscriber may carry in the sandbox (the hub sends the first and the last).
UPDATABLE = ("SubscriberKey", "EmailAddress", "Status")
SOAP_PAGE_SIZE = 2500
NOT_FOUND_CODE = "12002"
# The parent unit's MID when the sandbox is configured with none (Client.ID of its subscribers).
PARENT_CLIENT_ID = "500001"
FINAL_DELETE_STATUSES = ("Completed", "Aborted", "Invalid")


def soap_date(moment: datetime | None) -> str:
    if moment is None:
        return ""
    local = moment.astimezone(SYSTEM_TIME).replace(tzinfo=None)
    return local.isoformat(timespec="milliseconds")


def parse_date_value(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=SYSTEM_TIME) if parsed.tzinfo is None else parsed


@dataclass
class SandboxSubscriber:
    subscriber_id: int
    key: str
    email: str
    status: str
    created: datetime
    modified: datetime
    unsubscribed: datetime | None = None

    def properties(self, client_id: str = PARENT_CLIENT_ID) -> dict[str, str]:
        return {
            "ID": str(self.subscriber_id),
            "SubscriberKey": self.key,
            "EmailAddress": self.email,
            "Status": self.status,
            "CreatedDate": soap_date(self.created),
            "ModifiedDate": soap_date(self.modified),
            "UnsubscribedDate": soap_date(self.unsubscribed),
            "EmailTypePreference": "HTML",
            "Client.ID": client_id,  # the MID of the unit holding the subscriber
        }

    def view(self) -> dict[str, Any]:
        return {
            "id": self.subscriber_id,
            "subscriberKey": self.key,
            "emailAddress": self.email,
            "status": self.status,
            "modified": self.modified.isoformat(),
            "unsubscribed": self.unsubscribed.isoformat() if self.unsubscribed else None,
        }


@dataclass
class ContinuedRetrieve:
    matched: list[str]  # subscriber keys, fixed at the first page
    offset: int
    properties: list[str]
    page_size: int
    unit: str = ""  # the business unit whose token started the read: only it continues it


@dataclass
class DeleteOperation:
    operation_id: int
    keys: list[str]
    created: datetime
    status: str = "Pending"
    background_status: str = ""  # set once the test finishes the operation
    unit: str = ""  # the business unit (MID, "" the parent) whose token started it; only it reads its status


class SoapReadError(Exception):
    """The request is not one the tenant's deserialiser can read."""


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def parse_retrieve_extras(body: bytes) -> tuple[str, str]:
    """A RetrieveRequest's ``ContinueRequest`` and a filter's ``DateValue`` ("" when absent)."""
    root = SafeET.fromstring(body)
    request = root.find(f".//{{{soap.PARTNER_API}}}RetrieveRequest")
    if request is None:
        return "", ""
    return (
        _text(request.find(f"{{{soap.PARTNER_API}}}ContinueRequest")),
        _text(request.find(f"{{{soap.PARTNER_API}}}Filter/{{{soap.PARTNER_API}}}DateValue")),
    )


def parse_update(body: bytes) -> tuple[str, list[dict[str, str]]]:
    """An UpdateRequest's object type and each object's properties; SoapReadError if unreadable."""
    try:
        root = SafeET.fromstring(body)
    except (ET.ParseError, DefusedXmlException, ValueError) as error:
        raise SoapReadError(str(error)) from None
    request = root.find(f".//{{{soap.PARTNER_API}}}UpdateRequest")
    if request is None:
        raise SoapReadError("no UpdateRequest")
    kinds: set[str] = set()
    objects = []
    for child in request:
        name = child.tag.rsplit("}", 1)[-1]
        if name == "Options":
            continue
        if name != "Objects":
            raise SoapReadError(f"unexpected element {name}")
        kinds.add(child.get(f"{{{soap.XSI}}}type", "").rsplit(":", 1)[-1])
        values = {}
        for prop in child:
            prop_name = prop.tag.rsplit("}", 1)[-1]
            if prop_name not in UPDATABLE or len(prop):
                raise SoapReadError(f"unexpected element {prop_name}")
            values[prop_name] = _text(prop)
        if "Status" in values and values["Status"] not in SUBSCRIBER_STATUSES:
            raise SoapReadError(f"instance validation error: '{values['Status']}' is not a valid SubscriberStatus")
        objects.append(values)
    if len(kinds) > 1:
        raise SoapReadError("objects of several types")
    return (kinds.pop() if kinds else ""), objects


def update_response(results: list[tuple[str, dict[str, str], str]], *, relates_to: str = "") -> bytes:
    """An UpdateResponse; each result is (status code, the object's properties, message)."""
    envelope, body = soap._envelope("UpdateResponse", relates_to)
    message = ET.SubElement(body, f"{{{soap.PARTNER_API}}}UpdateResponse")
    failures = 0
    for ordinal, (code, properties, text) in enumerate(results):
        result = ET.SubElement(message, f"{{{soap.PARTNER_API}}}Results")
        ET.SubElement(result, f"{{{soap.PARTNER_API}}}StatusCode").text = code
        ET.SubElement(result, f"{{{soap.PARTNER_API}}}StatusMessage").text = text
        ET.SubElement(result, f"{{{soap.PARTNER_API}}}OrdinalID").text = str(ordinal)
        if code != "OK":
            failures += 1
            ET.SubElement(result, f"{{{soap.PARTNER_API}}}ErrorCode").text = NOT_FOUND_CODE
        obj = ET.SubElement(result, f"{{{soap.PARTNER_API}}}Object", {f"{{{soap.XSI}}}type": "Subscriber"})
        ET.SubElement(obj, f"{{{soap.PARTNER_API}}}PartnerKey", {f"{{{soap.XSI}}}nil": "true"})
        for name, value in properties.items():
            ET.SubElement(obj, f"{{{soap.PARTNER_API}}}{name}").text = value
    ET.SubElement(message, f"{{{soap.PARTNER_API}}}RequestID").text = str(uuid.uuid4())
    overall = "OK" if not failures else ("Error" if failures == len(results) else "Has Errors")
    ET.SubElement(message, f"{{{soap.PARTNER_API}}}OverallStatus").text = overall
    return soap._serialise(envelope)


def now_utc() -> datetime:
    return datetime.now(UTC)
