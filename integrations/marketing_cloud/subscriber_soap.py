"""The SOAP calls on All Subscribers: read status changes (``Retrieve``), unsubscribe (``Update``).

Shapes, from Salesforce's SOAP API documentation:

- ``Retrieve`` of ``Subscriber`` ("Retrieve a Subscriber", whose example filters on a date;
  developer.salesforce.com/docs/marketing/marketing-cloud/guide/retrieve_a_subscriber_via_the_web_service_api.html):
  ``RetrieveRequest`` with ``ObjectType``, ``Properties`` and a ``SimpleFilterPart``; a date is
  compared through ``DateValue`` (not ``Value``) with ``greaterThan``. Answers carry
  ``OverallStatus`` ``OK``, or ``MoreDataAvailable`` when more than a page (2,500) matched; the
  rest is read by sending a ``RetrieveRequest`` holding only ``ContinueRequest`` = the answer's
  ``RequestID`` ("Retrieve More than 2500 Records Using the ContinueRequest Property";
  FuelSDK's ``ET_Continue`` sends exactly that).
- ``Update`` of ``Subscriber`` with ``Status`` Unsubscribed, identified by ``SubscriberKey``
  ("Update Subscriber Attributes using the Update Method", which unsubscribes a subscriber).
  ``UpdateRequest`` takes many ``Objects``; ``UpdateResponse`` has one ``Results`` per object,
  in order, each with ``StatusCode`` (OK / Error), ``StatusMessage``, ``ErrorCode`` and
  ``OrdinalID`` (the ``UpdateResult`` object reference), and an ``OverallStatus``.

Dates in answers (``ModifiedDate``) are Marketing Cloud system time without an offset (US
Central Standard Time, UTC-6 all year; shared reference §6), as the data-extension dates are;
the ``DateValue`` of a filter is written in that time too.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET  # noqa: S405 - builds requests only; answers are parsed by soap.call
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from integrations.marketing_cloud.schema import MC_SYSTEM_TIME
from integrations.marketing_cloud.soap import PARTNER_API, SOAP11, XSI, _flatten, call
from integrations.transport import PermanentError, TransportError

# What a status read asks for. ModifiedDate is read as well as filtered on: it orders a
# subscriber's changes (an older status never overwrites a newer one).
SUBSCRIBER_PROPERTIES = ["ID", "SubscriberKey", "EmailAddress", "Status", "ModifiedDate", "UnsubscribedDate"]
# Objects per Update call: the call takes many; a batch this size answers well within the timeout.
UPDATE_BATCH = 50


def _envelope(token: str, body_element: str) -> tuple[ET.Element, ET.Element]:
    envelope = ET.Element(f"{{{SOAP11}}}Envelope")
    header = ET.SubElement(envelope, f"{{{SOAP11}}}Header")
    ET.SubElement(header, "{http://exacttarget.com}fueloauth").text = token
    body = ET.SubElement(envelope, f"{{{SOAP11}}}Body")
    return envelope, ET.SubElement(body, f"{{{PARTNER_API}}}{body_element}")


def mc_date_value(moment: dt.datetime) -> str:
    """A ``DateValue``: ISO 8601 in Marketing Cloud system time, no offset."""
    return moment.astimezone(MC_SYSTEM_TIME).strftime("%Y-%m-%dT%H:%M:%S")


def parse_soap_date(value: str) -> dt.datetime | None:
    """A SOAP date (``2024-06-23T14:05:09.123``, no offset: system time) as an aware instant."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=MC_SYSTEM_TIME) if parsed.tzinfo is None else parsed


def retrieve_request(token: str, *, modified_after: dt.datetime | None, continue_id: str = "") -> bytes:
    envelope, message = _envelope(token, "RetrieveRequestMsg")
    request = ET.SubElement(message, f"{{{PARTNER_API}}}RetrieveRequest")
    if continue_id:
        ET.SubElement(request, f"{{{PARTNER_API}}}ContinueRequest").text = continue_id
        return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
    ET.SubElement(request, f"{{{PARTNER_API}}}ObjectType").text = "Subscriber"
    for name in SUBSCRIBER_PROPERTIES:
        ET.SubElement(request, f"{{{PARTNER_API}}}Properties").text = name
    if modified_after is not None:
        part = ET.SubElement(request, f"{{{PARTNER_API}}}Filter", {f"{{{XSI}}}type": "SimpleFilterPart"})
        ET.SubElement(part, f"{{{PARTNER_API}}}Property").text = "ModifiedDate"
        ET.SubElement(part, f"{{{PARTNER_API}}}SimpleOperator").text = "greaterThan"
        ET.SubElement(part, f"{{{PARTNER_API}}}DateValue").text = mc_date_value(modified_after)
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)


def update_request(token: str, subscriber_keys: list[str]) -> bytes:
    envelope, message = _envelope(token, "UpdateRequest")
    ET.SubElement(message, f"{{{PARTNER_API}}}Options")
    for key in subscriber_keys:
        obj = ET.SubElement(message, f"{{{PARTNER_API}}}Objects", {f"{{{XSI}}}type": "Subscriber"})
        ET.SubElement(obj, f"{{{PARTNER_API}}}SubscriberKey").text = key
        ET.SubElement(obj, f"{{{PARTNER_API}}}Status").text = "Unsubscribed"
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)


@dataclass
class RetrievePage:
    results: list[dict[str, str]]
    more: bool  # OverallStatus MoreDataAvailable: continue with request_id
    request_id: str


@dataclass
class UpdateResult:
    subscriber_key: str
    ok: bool
    status_message: str
    error_code: str


class SubscriberSoap:
    """All Subscribers through one tenant's SOAP endpoint, with the client's shared token."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _soap_base(self, token: Any) -> str:
        """The tenant's SOAP base: its REST base with ``.rest.`` made ``.soap.`` (same subdomain).

        The shared token keeps only the REST instance URL; a tenant's two bases differ only
        there (``https://{subdomain}.rest|soap.marketingcloudapis.com``, shared reference
        §3.1 and §3.4). Any other host (the sandbox) serves both.
        """
        base = self.client.rest_base_url or token.rest_instance_url
        if not base:
            raise PermanentError("no SOAP base URL: set MC_REST_BASE_URL or use a token with an instance URL")
        parts = urlsplit(base)
        host = parts.hostname or ""
        if host.endswith(".rest.marketingcloudapis.com"):
            host = host[: -len(".rest.marketingcloudapis.com")] + ".soap.marketingcloudapis.com"
            base = urlunsplit((parts.scheme, host, parts.path, "", ""))
        return base

    def _call(self, build: Any, action: str) -> ET.Element:
        """One call; a Security fault ("Login Failed": the token expired early) refreshes the token once."""
        token = self.client.get_token()
        try:
            return call(
                self.client.session,
                self._soap_base(token),
                build(token.access_token),
                action=action,
                timeout=self.client.timeout,
            )
        except TransportError as exc:
            if not exc.error_code.endswith("Security"):
                raise
            self.client.invalidate_token(token.access_token)
        token = self.client.get_token()
        return call(
            self.client.session,
            self._soap_base(token),
            build(token.access_token),
            action=action,
            timeout=self.client.timeout,
        )

    def retrieve_changed(self, modified_after: dt.datetime | None, continue_id: str = "") -> RetrievePage:
        message = self._call(
            lambda token: retrieve_request(token, modified_after=modified_after, continue_id=continue_id), "Retrieve"
        )
        status = (message.findtext(f"{{{PARTNER_API}}}OverallStatus") or "").strip()
        if status not in ("OK", "MoreDataAvailable"):
            # "Error: ..." names a request the tenant will refuse again (an unknown property, no rights).
            raise PermanentError(f"SOAP Retrieve of Subscriber: {status}"[:500])
        results = [_flatten(r) for r in message.findall(f"{{{PARTNER_API}}}Results")]
        request_id = (message.findtext(f"{{{PARTNER_API}}}RequestID") or "").strip()
        return RetrievePage(results, status == "MoreDataAvailable", request_id)

    def unsubscribe(self, subscriber_keys: list[str]) -> list[UpdateResult]:
        """Set these subscribers' status to Unsubscribed: one result per key, in order."""
        if not subscriber_keys:
            return []
        if len(subscriber_keys) > UPDATE_BATCH:
            raise ValueError(f"at most {UPDATE_BATCH} subscribers per Update call")
        message = self._call(lambda token: update_request(token, subscriber_keys), "Update")
        results = message.findall(f"{{{PARTNER_API}}}Results")
        by_ordinal: dict[int, ET.Element] = {}
        for position, result in enumerate(results):
            ordinal = (result.findtext(f"{{{PARTNER_API}}}OrdinalID") or "").strip()
            by_ordinal[int(ordinal) if ordinal.isdigit() else position] = result
        answered = []
        for position, key in enumerate(subscriber_keys):
            result = by_ordinal.get(position)
            if result is None:
                answered.append(UpdateResult(key, False, "no result for this object in the answer", ""))
                continue
            code = (result.findtext(f"{{{PARTNER_API}}}StatusCode") or "").strip()
            answered.append(
                UpdateResult(
                    key,
                    code == "OK",
                    (result.findtext(f"{{{PARTNER_API}}}StatusMessage") or "").strip()[:500],
                    (result.findtext(f"{{{PARTNER_API}}}ErrorCode") or "").strip()[:20],
                )
            )
        return answered
