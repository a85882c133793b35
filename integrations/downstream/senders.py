"""How one delivery reaches one target: a signed webhook POST, or a Salesforce core upsert."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from customers.cim import render_individual
from customers.models import ChangeEvent, Individual
from integrations.downstream.models import Delivery, DownstreamTarget
from integrations.downstream.signing import sign
from integrations.marketing_cloud.client import parse_retry_after
from integrations.models import AccessToken
from integrations.transport import TransportError

SALESFORCE = "SALESFORCE"
HTTP_TIMEOUT = 10.0


def event_body(change: ChangeEvent) -> dict[str, Any]:
    """The webhook payload: the CIM Individual (as right after the change) plus the change."""
    individual = change.snapshot
    if individual is None:  # bulk imports record no snapshot: render the record now
        record = (
            Individual.objects.prefetch_related("contact_points", "cross_references")
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


def _raise_for(response: requests.Response, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = (response.text or "")[:300]
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status in (408, 425, 429) or status >= 500:
        raise TransportError(f"{what} answered {status}: {detail}", http_status=status, retry_after=retry_after)
    raise TransportError(f"{what} refused with {status}: {detail}", permanent=True, http_status=status)


def send_webhook(target: DownstreamTarget, delivery: Delivery, session: requests.Session) -> int:
    body = json.dumps(event_body(delivery.change), separators=(",", ":"), default=str).encode()
    timestamp = int(time.time())
    msg_id = delivery.webhook_id
    try:
        response = session.post(
            target.url,
            data=body,
            timeout=HTTP_TIMEOUT,
            headers={
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(target.secret, msg_id, timestamp, body),
            },
        )
    except requests.Timeout:
        raise TransportError(f"timed out after {HTTP_TIMEOUT}s") from None
    except requests.ConnectionError as exc:
        raise TransportError(f"connection failed: {type(exc).__name__}") from None
    _raise_for(response, "the endpoint")
    return response.status_code


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
        try:
            response = session.post(
                f"{target.url.rstrip('/')}/services/oauth2/token",
                timeout=HTTP_TIMEOUT,
                data={
                    "grant_type": "client_credentials",
                    "client_id": settings.SF_CLIENT_ID,
                    "client_secret": settings.SF_CLIENT_SECRET,
                },
            )
        except requests.RequestException as exc:
            raise TransportError(f"Salesforce token request failed: {type(exc).__name__}") from None
        _raise_for(response, "Salesforce's token endpoint")
        body = response.json()
        row.access_token = body["access_token"]
        row.rest_instance_url = body.get("instance_url") or target.url
        # Client-credentials tokens carry no expires_in; the session lasts its policy (2 h by default).
        row.expires_at = timezone.now() + dt.timedelta(minutes=90)
        row.fetched_at = timezone.now()
        row.save()
        return row


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


def send_salesforce(target: DownstreamTarget, delivery: Delivery, session: requests.Session) -> int:
    body = event_body(delivery.change)
    fields = salesforce_fields(body["data"]["individual"], delivery.change)
    path = (
        f"/services/data/{settings.SF_API_VERSION}/sobjects/{quote(settings.SF_SOBJECT)}/"
        f"{quote(settings.SF_MASTER_ID_FIELD)}/{quote(delivery.master_id, safe='')}"
    )
    for attempt in (1, 2):
        token = _salesforce_token(target, session, refresh=attempt == 2)
        base = (token.rest_instance_url or target.url).rstrip("/")
        try:
            response = session.patch(
                base + path,
                json=fields,
                timeout=HTTP_TIMEOUT,
                headers={"Authorization": f"Bearer {token.access_token}"},
            )
        except requests.Timeout:
            raise TransportError(f"timed out after {HTTP_TIMEOUT}s") from None
        except requests.ConnectionError as exc:
            raise TransportError(f"connection failed: {type(exc).__name__}") from None
        if response.status_code == 401 and attempt == 1:
            continue  # INVALID_SESSION_ID: a fresh token, once
        if response.status_code == 403 and "REQUEST_LIMIT_EXCEEDED" in response.text:
            raise TransportError("Salesforce API request limit exceeded", http_status=403, retry_after=300)
        _raise_for(response, "Salesforce")
        return response.status_code
    raise AssertionError("unreachable")


SENDERS = {DownstreamTarget.WEBHOOK: send_webhook, DownstreamTarget.SALESFORCE: send_salesforce}
