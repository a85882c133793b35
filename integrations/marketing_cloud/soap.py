"""Marketing Cloud's SOAP API, as far as the hub uses it: the envelope call, ``Retrieve`` with one simple filter.

A data extension's fields are documented only through SOAP: a ``Retrieve`` of
``DataExtensionField`` filtered on ``DataExtension.CustomerKey`` (the ``DataExtensionField``
object reference; FuelSDK's ``ET_DataExtension_Column`` and mcdev's ``DataExtensionField`` type
do the same). The endpoint is the token's ``soap_instance_url`` plus ``Service.asmx``; the token
goes in the ``<fueloauth xmlns="http://exacttarget.com">`` header (shared reference §3.1).

Answers are parsed with defusedxml, which refuses entity expansion and external entities.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - builds the request only; answers go through defusedxml
from typing import Any

import requests
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from integrations.transport import PermanentError, TransientError, raise_for_status, request

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
# Tenants answer SOAP 1.1 requests in SOAP 1.2's envelope namespace (Salesforce's examples do too).
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
PARTNER_API = "http://exacttarget.com/wsdl/partnerAPI"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
# The parts of an answer kept, so a huge or hostile answer cannot exhaust memory.
MAX_ANSWER_BYTES = 5 * 1024 * 1024


def _request_body(
    token: str, object_type: str, properties: list[str], filter_property: str | None, filter_value: str | None
) -> bytes:
    envelope = ET.Element(f"{{{SOAP11}}}Envelope")
    header = ET.SubElement(envelope, f"{{{SOAP11}}}Header")
    ET.SubElement(header, "{http://exacttarget.com}fueloauth").text = token
    body = ET.SubElement(envelope, f"{{{SOAP11}}}Body")
    message = ET.SubElement(body, f"{{{PARTNER_API}}}RetrieveRequestMsg")
    request = ET.SubElement(message, f"{{{PARTNER_API}}}RetrieveRequest")
    ET.SubElement(request, f"{{{PARTNER_API}}}ObjectType").text = object_type
    for name in properties:
        ET.SubElement(request, f"{{{PARTNER_API}}}Properties").text = name
    if filter_property is not None:
        part = ET.SubElement(request, f"{{{PARTNER_API}}}Filter", {f"{{{XSI}}}type": "SimpleFilterPart"})
        ET.SubElement(part, f"{{{PARTNER_API}}}Property").text = filter_property
        ET.SubElement(part, f"{{{PARTNER_API}}}SimpleOperator").text = "equals"
        ET.SubElement(part, f"{{{PARTNER_API}}}Value").text = filter_value or ""
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)


def _flatten(element: ET.Element, prefix: str = "") -> dict[str, str]:
    """A result's properties by dotted path (``DataExtension.CustomerKey``), text values only."""
    values: dict[str, str] = {}
    for child in element:
        name = prefix + child.tag.rsplit("}", 1)[-1]
        if len(child):
            values.update(_flatten(child, name + "."))
        else:
            values[name] = (child.text or "").strip()
    return values


def retrieve(
    session: requests.Session,
    soap_base_url: str,
    token: str,
    object_type: str,
    properties: list[str],
    *,
    filter_property: str | None = None,
    filter_value: str | None = None,
    timeout: float = 15.0,
) -> list[dict[str, str]]:
    """Every result of a Retrieve (this hub's retrievals fit one page), as dicts by property path.

    Raises TransportError for a fault, an HTTP error, an unreadable answer or an OverallStatus
    other than OK; a Security fault ("Login Failed") is permanent. The request goes through
    ``integrations.transport.request`` (network failures, the answer read at most 5 MiB).
    """
    payload = _request_body(token, object_type, properties, filter_property, filter_value)
    message = call(session, soap_base_url, payload, action="Retrieve", timeout=timeout)
    status = (message.findtext(f"{{{PARTNER_API}}}OverallStatus") or "").strip()
    if status not in ("OK", "MoreDataAvailable"):
        raise PermanentError(f"SOAP Retrieve of {object_type}: {status}"[:500])
    return [_flatten(result) for result in message.findall(f"{{{PARTNER_API}}}Results")]


def call(session: requests.Session, soap_base_url: str, payload: bytes, *, action: str, timeout: float) -> ET.Element:
    """POST one envelope to ``Service.asmx``; the answer's ``{action}ResponseMsg`` element.

    A SOAP fault raises: a Security fault ("Login Failed") or a Client fault is permanent
    (the same request will fail again), a Server fault (throttling answers one, with HTTP 500)
    transient. An answer that is no SOAP envelope is judged by its HTTP status.
    """
    url = soap_base_url.rstrip("/") + "/Service.asmx"
    answer = request(
        session,
        "POST",
        url,
        data=payload,
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": action},
        timeout=timeout,
        system="marketing_cloud",
        what=f"SOAP {action}",
        max_bytes=MAX_ANSWER_BYTES,
    )
    if answer.truncated:
        raise TransientError("SOAP answer too large", http_status=answer.status)
    try:
        root = SafeET.fromstring(answer.body)
    except (ET.ParseError, DefusedXmlException, ValueError):
        root = None
    envelope_ns = root.tag[1 : root.tag.index("}")] if root is not None and root.tag.startswith("{") else ""
    if root is None or envelope_ns not in (SOAP11, SOAP12):
        # Faults come in a SOAP envelope, with a 500; any other answer is judged by its status.
        what = "is not XML" if root is None else "is no SOAP envelope"
        raise_for_status(answer, what=f"SOAP {action}", label=f" (the answer {what})")
        raise TransientError(f"SOAP answer with status {answer.status} {what}", http_status=answer.status)
    fault = root.find(f"{{{envelope_ns}}}Body/{{{envelope_ns}}}Fault")
    if fault is not None:
        # SOAP 1.1 names faultcode/faultstring; 1.2 has Code/Value and Reason/Text.
        code = (fault.findtext("faultcode") or fault.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Value") or "").strip()
        text = (fault.findtext("faultstring") or fault.findtext(f"{{{SOAP12}}}Reason/{{{SOAP12}}}Text") or "").strip()
        # A Security fault ("Login Failed") or a Client fault (the request is wrong) will not change on retry.
        fault_error = PermanentError if code.endswith(("Security", "Client")) else TransientError
        raise fault_error(f"SOAP fault {code}: {text}"[:500], http_status=answer.status, error_code=code[:20])
    name = "UpdateResponse" if action == "Update" else f"{action}ResponseMsg"
    message = root.find(f"{{{envelope_ns}}}Body/{{{PARTNER_API}}}{name}")
    if message is None:
        raise TransientError(f"SOAP answer without {name}", http_status=answer.status)
    return message


def as_bool(value: Any) -> bool:
    return str(value).strip().lower() == "true"
