"""The sandbox's SOAP API (``/Service.asmx``): ``Retrieve`` of data extensions and their fields.

The documented way to learn a data extension's fields is a SOAP ``Retrieve`` of
``DataExtensionField`` filtered on ``DataExtension.CustomerKey`` (the ``DataExtensionField`` object
reference; FuelSDK's ``ET_DataExtension_Column``, mcdev's ``DataExtensionField`` type and
FuelSDK-Java's ``retrieveColumns`` all do exactly that). The token travels in the envelope's
``<fueloauth xmlns="http://exacttarget.com">`` header (shared reference §3.1). The REST routes some
tools use instead (``/data/v1/customObjects/{id}/fields``) are undocumented and take the data
extension's GUID, not its key, so the hub does not rely on them.

Requests are parsed with defusedxml (no entity expansion, no external entities); answers are
built with the standard library's ElementTree. Answers follow what a tenant sends (Salesforce's
SOAP examples, and tenant answers pasted in public code): the SOAP 1.2 envelope namespace with an
``env:Header`` of WS-Addressing fields and a WS-Security timestamp, then ``RetrieveResponseMsg`` in
the ``http://exacttarget.com/wsdl/partnerAPI`` namespace with ``OverallStatus``, ``RequestID`` and
``Results`` typed by ``xsi:type``. A bad token is a SOAP 1.1 ``q0:Security`` fault "Login Failed"
with HTTP 500 (the fault a tenant answered in DougMidgley/SFMC-SDK#106 and FuelSDK-Ruby#44).
"""

from __future__ import annotations

import datetime as dt
import uuid
import xml.etree.ElementTree as ET  # noqa: S405 - used only to build answers; parsing is defusedxml's
from collections.abc import Iterable
from dataclasses import dataclass, field

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

__all__ = ["RetrieveRequest", "SoapRequestError", "fault", "parse_request", "retrieve_response"]

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
PARTNER_API = "http://exacttarget.com/wsdl/partnerAPI"
FUEL_OAUTH = "http://exacttarget.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
CONTENT_TYPE = "text/xml; charset=utf-8"

ET.register_namespace("", PARTNER_API)
ET.register_namespace("soap", SOAP11)
ET.register_namespace("env", SOAP12)
ET.register_namespace("xsi", XSI)
ET.register_namespace("wsa", WSA)
ET.register_namespace("wsse", WSSE)
ET.register_namespace("wsu", WSU)


class SoapRequestError(Exception):
    """The request is no SOAP envelope the service can read."""


@dataclass
class RetrieveRequest:
    object_type: str
    properties: list[str]
    # (Property, SimpleOperator, [Value, ...]) of a SimpleFilterPart, or None without a filter.
    filter: tuple[str, str, list[str]] | None = None
    message_id: str = field(default="")


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def parse_request(body: bytes) -> tuple[str, str, RetrieveRequest | None]:
    """The envelope's fueloauth token, the Body's operation name and, for a Retrieve, the request."""
    try:
        root = SafeET.fromstring(body)
    except (ET.ParseError, DefusedXmlException, ValueError) as error:
        raise SoapRequestError(str(error)) from None
    if root.tag not in (f"{{{SOAP11}}}Envelope", f"{{{SOAP12}}}Envelope"):
        raise SoapRequestError("not a SOAP envelope")
    soap = root.tag[1 : root.tag.index("}")]
    header = root.find(f"{{{soap}}}Header")
    token = _text(header.find(f"{{{FUEL_OAUTH}}}fueloauth")) if header is not None else ""
    message_id = _text(header.find(f"{{{WSA}}}MessageID")) if header is not None else ""
    body_element = root.find(f"{{{soap}}}Body")
    operation = next(iter(body_element), None) if body_element is not None else None
    if operation is None:
        raise SoapRequestError("empty SOAP body")
    name = operation.tag.rsplit("}", 1)[-1]
    if name != "RetrieveRequestMsg":
        return token, name, None
    request = operation.find(f"{{{PARTNER_API}}}RetrieveRequest")
    if request is None:
        raise SoapRequestError("RetrieveRequestMsg without RetrieveRequest")
    properties = [_text(p) for p in request.findall(f"{{{PARTNER_API}}}Properties") if _text(p)]
    filter_part = request.find(f"{{{PARTNER_API}}}Filter")
    parsed_filter = None
    if filter_part is not None:
        kind = filter_part.get(f"{{{XSI}}}type", "").rsplit(":", 1)[-1]
        if kind != "SimpleFilterPart":
            raise SoapRequestError(f"unsupported filter type {kind or '(none)'}")
        parsed_filter = (
            _text(filter_part.find(f"{{{PARTNER_API}}}Property")),
            _text(filter_part.find(f"{{{PARTNER_API}}}SimpleOperator")),
            [_text(v) for v in filter_part.findall(f"{{{PARTNER_API}}}Value")],
        )
    object_type = _text(request.find(f"{{{PARTNER_API}}}ObjectType"))
    return token, name, RetrieveRequest(object_type, properties, parsed_filter, message_id)


def _envelope(action: str, relates_to: str, soap: str = SOAP12) -> tuple[ET.Element, ET.Element]:
    envelope = ET.Element(f"{{{soap}}}Envelope")
    header = ET.SubElement(envelope, f"{{{soap}}}Header")
    ET.SubElement(header, f"{{{WSA}}}Action").text = action
    ET.SubElement(header, f"{{{WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
    if relates_to:
        ET.SubElement(header, f"{{{WSA}}}RelatesTo").text = relates_to
    ET.SubElement(header, f"{{{WSA}}}To").text = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    security = ET.SubElement(header, f"{{{WSSE}}}Security")
    stamp = ET.SubElement(security, f"{{{WSU}}}Timestamp", {f"{{{WSU}}}Id": f"Timestamp-{uuid.uuid4()}"})
    ET.SubElement(stamp, f"{{{WSU}}}Created").text = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    ET.SubElement(stamp, f"{{{WSU}}}Expires").text = (now + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return envelope, ET.SubElement(envelope, f"{{{soap}}}Body")


def _serialise(envelope: ET.Element) -> bytes:
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)


def retrieve_response(
    results: Iterable[tuple[str, list[tuple[str, str]]]],
    *,
    overall_status: str = "OK",
    relates_to: str = "",
    request_id: str = "",
) -> bytes:
    """A RetrieveResponseMsg; each result is ``(xsi:type, [(property path, value), ...])``.

    A dotted path (``DataExtension.CustomerKey``) becomes nested elements, as the tenant nests them.
    """
    envelope, body = _envelope("RetrieveResponse", relates_to)
    message = ET.SubElement(body, f"{{{PARTNER_API}}}RetrieveResponseMsg")
    ET.SubElement(message, f"{{{PARTNER_API}}}OverallStatus").text = overall_status
    ET.SubElement(message, f"{{{PARTNER_API}}}RequestID").text = request_id or str(uuid.uuid4())
    for xsi_type, properties in results:
        result = ET.SubElement(message, f"{{{PARTNER_API}}}Results", {f"{{{XSI}}}type": xsi_type})
        for path, value in properties:
            parent = result
            *parents, leaf = path.split(".")
            for name in parents:
                found = parent.find(f"{{{PARTNER_API}}}{name}")
                parent = found if found is not None else ET.SubElement(parent, f"{{{PARTNER_API}}}{name}")
            ET.SubElement(parent, f"{{{PARTNER_API}}}{leaf}").text = value
    return _serialise(envelope)


def fault(code: str, text: str, *, actor: str = "") -> bytes:
    """A SOAP 1.1 fault; ``q0:Security`` faults name the WS-Security namespace as the tenant's do."""
    envelope, body = _envelope("http://schemas.xmlsoap.org/ws/2004/08/addressing/fault", "", SOAP11)
    soap_fault = ET.SubElement(body, f"{{{SOAP11}}}Fault")
    code_element = ET.SubElement(soap_fault, "faultcode")
    if code.startswith("q0:"):
        code_element.set("xmlns:q0", WSSE)
    code_element.text = code
    ET.SubElement(soap_fault, "faultstring").text = text
    if actor:
        ET.SubElement(soap_fault, "faultactor").text = actor
    return _serialise(envelope)
