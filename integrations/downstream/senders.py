"""How one delivery reaches one target: a signed webhook POST, or a Salesforce core upsert.

Every request goes through the session ``egress.delivery_session`` makes (https, checked public
addresses, no redirects). Of an answer only its status and size are kept (and, from Salesforce, an
error code from a fixed list), never its body: an answer could be what an internal service said.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from customers.cim import render_individual
from customers.models import ChangeEvent, Individual
from integrations.downstream.egress import DestinationRefused
from integrations.downstream.models import Delivery, DownstreamTarget
from integrations.downstream.signing import sign
from integrations.marketing_cloud.client import parse_retry_after
from integrations.models import AccessToken
from integrations.transport import TransportError

SALESFORCE = "SALESFORCE"
HTTP_TIMEOUT = 10.0
# An answer is counted up to this size and read no further (nothing of it is stored).
MAX_ANSWER_BYTES = 1024 * 1024


def event_body(change: ChangeEvent) -> dict[str, Any]:
    """The webhook payload: the CIM Individual (as right after the change) plus the change."""
    individual = change.snapshot
    if individual is None:  # bulk imports record no snapshot: render the record now
        record = (
            Individual.objects.prefetch_related("contact_points", "cross_references", "subscription_consents")
            .filter(master_id=change.master_id)
            .first()
        )
        individual = render_individual(record) if record else None
    return {
        "type": f"customer.{change.change_type}",
        "timestamp": change.created_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "masterId": change.master_id,
            "changeId": change.pk,
            "change": change.change,
            "individual": individual,
        },
    }


@dataclass(frozen=True)
class Answer:
    """What the hub keeps of an endpoint's answer: its status and its size, never its body."""

    status: int
    size: int  # bytes read; MAX_ANSWER_BYTES + 1 means "more than MAX_ANSWER_BYTES"
    retry_after: float | None = None

    def describe(self, error_code: str = "") -> str:
        """``404 NOT_FOUND (123 bytes)``: the status, a known error code, the size."""
        status = f"{self.status} {error_code}" if error_code else str(self.status)
        if self.size > MAX_ANSWER_BYTES:
            return f"{status} (over {MAX_ANSWER_BYTES} bytes)"
        return f"{status} ({self.size} bytes)"


class DeliveryFailed(TransportError):
    """A send failed; ``response_bytes`` is the size of the endpoint's answer when there was one."""

    def __init__(self, message: str, *, response_bytes: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.response_bytes = response_bytes


def _same_https_host(url: str, expected: str) -> bool:
    """``url`` is https (or the scheme ``expected`` has, for development) on ``expected``'s host and port."""
    try:
        given, wanted = urlsplit(url), urlsplit(expected)
        return (given.scheme, given.hostname, given.port) == (wanted.scheme, wanted.hostname, wanted.port) and (
            given.scheme == "https" or settings.DOWNSTREAM_ALLOW_HTTP
        )
    except ValueError:
        return False


def _call(session: requests.Session, method: str, url: str, **kwargs: Any) -> tuple[Answer, bytes]:
    """One request. The body comes back for the caller to read (a token) and is never stored.

    At most MAX_ANSWER_BYTES of it are read: an endpoint could answer with gigabytes.
    """
    try:
        response = session.request(method, url, timeout=HTTP_TIMEOUT, allow_redirects=False, stream=True, **kwargs)
        with response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    break
    except DestinationRefused as exc:
        raise DeliveryFailed(str(exc), permanent=True) from None
    except requests.Timeout:
        raise DeliveryFailed(f"timed out after {HTTP_TIMEOUT}s") from None
    except requests.RequestException as exc:
        raise DeliveryFailed(f"connection failed: {type(exc).__name__}") from None
    answer = Answer(
        response.status_code,
        min(size, MAX_ANSWER_BYTES + 1),
        parse_retry_after(response.headers.get("Retry-After")),
    )
    return answer, b"".join(chunks)[:MAX_ANSWER_BYTES]


def _raise_for(answer: Answer, what: str, *, error_code: str = "") -> None:
    status = answer.status
    if 200 <= status < 300:
        return
    detail = answer.describe(error_code)
    common: dict[str, Any] = {"http_status": status, "error_code": error_code, "response_bytes": answer.size}
    if status in (301, 302, 303, 307, 308):
        raise DeliveryFailed(f"{what} answered {detail}; redirects are not followed", permanent=True, **common)
    if status in (408, 425, 429) or status >= 500:
        raise DeliveryFailed(f"{what} answered {detail}", retry_after=answer.retry_after, **common)
    raise DeliveryFailed(f"{what} refused with {detail}", permanent=True, **common)


def send_webhook(target: DownstreamTarget, delivery: Delivery, session: requests.Session) -> Answer:
    body = json.dumps(event_body(delivery.change), separators=(",", ":"), default=str).encode()
    timestamp = int(time.time())
    msg_id = delivery.webhook_id
    answer, _ = _call(
        session,
        "POST",
        target.url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(target.secret, msg_id, timestamp, body),
        },
    )
    _raise_for(answer, "the endpoint")
    return answer


# ---------------------------------------------------------------------------
# Salesforce core: OAuth client credentials, upsert by the master-ID external ID field
# ---------------------------------------------------------------------------
def _salesforce_token(target: DownstreamTarget, session: requests.Session, *, refresh: bool = False) -> AccessToken:
    system = f"{SALESFORCE}:{target.pk}"
    token = AccessToken.objects.filter(system=system).first()
    if token and not refresh and token.expires_at > timezone.now():
        return token
    with transaction.atomic():
        AccessToken.objects.get_or_create(system=system, defaults={"access_token": "", "expires_at": timezone.now()})
        row = AccessToken.objects.select_for_update().get(system=system)
        if not refresh and row.access_token and row.expires_at > timezone.now():
            return row
        answer, answer_body = _call(
            session,
            "POST",
            f"{target.url.rstrip('/')}/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": settings.SF_CLIENT_ID,
                "client_secret": settings.SF_CLIENT_SECRET,
            },
        )
        _raise_for(answer, "Salesforce's token endpoint", error_code=salesforce_error_code(answer_body))
        try:
            body = json.loads(answer_body)
            access_token = body["access_token"]
        except (ValueError, TypeError, KeyError):
            raise DeliveryFailed(
                f"Salesforce's token endpoint answered {answer.describe()} without a token",
                http_status=answer.status,
                response_bytes=answer.size,
            ) from None
        instance_url = body.get("instance_url") or target.url
        if not isinstance(instance_url, str) or not _same_https_host(instance_url, target.url):
            # The REST calls carry the bearer token and the personal data: only to the org's own My
            # Domain (what the token endpoint of a My Domain answers), never where an answer points.
            raise DeliveryFailed(
                "Salesforce's token endpoint named an instance_url on another host than the target's My Domain",
                permanent=True,
                http_status=answer.status,
                response_bytes=answer.size,
            )
        row.access_token = access_token
        row.rest_instance_url = instance_url
        # Client-credentials tokens carry no expires_in; the session lasts its policy (2 h by default).
        row.expires_at = timezone.now() + dt.timedelta(minutes=90)
        row.fetched_at = timezone.now()
        row.save()
        return row


# Salesforce's own error codes (REST errorCode, OAuth error): one of these is kept with a failure,
# since it names the refusal; anything else in an answer, message text included, is not kept.
SALESFORCE_ERROR_CODES = frozenset(
    {
        "API_CURRENTLY_DISABLED",
        "API_DISABLED_FOR_ORG",
        "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
        "DUPLICATE_VALUE",
        "DUPLICATES_DETECTED",
        "ENTITY_IS_DELETED",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "FIELD_INTEGRITY_EXCEPTION",
        "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "INVALID_AUTH_HEADER",
        "INVALID_CROSS_REFERENCE_KEY",
        "INVALID_EMAIL_ADDRESS",
        "INVALID_FIELD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_SESSION_ID",
        "INVALID_TYPE",
        "JSON_PARSER_ERROR",
        "MALFORMED_ID",
        "METHOD_NOT_ALLOWED",
        "NOT_FOUND",
        "REQUEST_LIMIT_EXCEEDED",
        "REQUIRED_FIELD_MISSING",
        "SERVER_UNAVAILABLE",
        "STRING_TOO_LONG",
        "UNABLE_TO_LOCK_ROW",
        "UNKNOWN_EXCEPTION",
        "invalid_client",
        "invalid_client_id",
        "invalid_grant",
        "invalid_request",
        "unsupported_grant_type",
    }
)


def salesforce_error_code(answer_body: bytes) -> str:
    """The Salesforce error code in an answer, when it is one of SALESFORCE_ERROR_CODES; else ''."""
    try:
        parsed = json.loads(answer_body)
    except ValueError:
        return ""
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        code = parsed[0].get("errorCode")
    elif isinstance(parsed, dict):
        code = parsed.get("error")
    else:
        return ""
    return code if isinstance(code, str) and code in SALESFORCE_ERROR_CODES else ""


def salesforce_fields(individual: dict[str, Any] | None, change: ChangeEvent) -> dict[str, Any]:
    if individual is None:
        return {}
    points = individual.get("contactPoints") or []
    email = next((p["emailAddress"] for p in points if p["contactPointType"] == "ContactPointEmail"), None)
    phone = next((p["telephoneNumber"] for p in points if p["contactPointType"] == "ContactPointPhone"), None)
    address = next((p for p in points if p["contactPointType"] == "ContactPointAddress"), None)
    fields: dict[str, Any] = {
        "FirstName": individual.get("firstName"),
        "LastName": individual.get("lastName") or "(unknown)",  # required on Contact
        "Email": email,
        "MobilePhone": phone,
        "Birthdate": individual.get("birthDate"),
        "HasOptedOutOfEmail": individual.get("doNotMarketFromUpdateDate") is not None,
    }
    if address:
        fields.update(
            MailingStreet=address.get("addressLine1"),
            MailingCity=address.get("cityName"),
            MailingPostalCode=address.get("postalCodeText"),
            MailingState=address.get("stateProvinceName"),
            MailingCountry=address.get("countryName"),
        )
    return {k: v for k, v in fields.items() if v is not None}


def send_salesforce(target: DownstreamTarget, delivery: Delivery, session: requests.Session) -> Answer:
    body = event_body(delivery.change)
    fields = salesforce_fields(body["data"]["individual"], delivery.change)
    path = (
        f"/services/data/{settings.SF_API_VERSION}/sobjects/{quote(settings.SF_SOBJECT)}/"
        f"{quote(settings.SF_MASTER_ID_FIELD)}/{quote(delivery.master_id, safe='')}"
    )
    for attempt in (1, 2):
        token = _salesforce_token(target, session, refresh=attempt == 2)
        # instance_url came from the token endpoint's answer: the session checks it like any address.
        base = (token.rest_instance_url or target.url).rstrip("/")
        answer, answer_body = _call(
            session, "PATCH", base + path, json=fields, headers={"Authorization": f"Bearer {token.access_token}"}
        )
        if answer.status == 401 and attempt == 1:
            continue  # INVALID_SESSION_ID: a fresh token, once
        error_code = salesforce_error_code(answer_body) if answer.status >= 300 else ""
        if answer.status == 403 and error_code == "REQUEST_LIMIT_EXCEEDED":
            raise DeliveryFailed(
                "Salesforce API request limit exceeded",
                http_status=403,
                error_code=error_code,
                retry_after=300,
                response_bytes=answer.size,
            )
        what = "Salesforce (several records hold this master ID)" if answer.status == 300 else "Salesforce"
        _raise_for(answer, what, error_code=error_code)
        return answer
    raise AssertionError("unreachable")


SENDERS = {DownstreamTarget.WEBHOOK: send_webhook, DownstreamTarget.SALESFORCE: send_salesforce}
