"""Plays Journey Builder: signs and sends custom-activity execute calls to the hub.

When a contact reaches a custom activity, Journey Builder POSTs to the activity's execute URL with
``Content-Type: application/jwt``; the body is a JWT signed (HS256) with the installed package's
JWT signing secret, carrying the activity's in-arguments. This module builds exactly that, so the
hub's execute endpoint can be exercised locally and in tests without a Marketing Cloud account.
No Django imports: benchmarks and scripts use it as a plain library.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import requests

__all__ = ["DEMO_SUBSCRIBERS", "build_execute_payload", "send_demo", "send_execute", "sign_execute"]

JWT_CONTENT_TYPE = "application/jwt"


def build_execute_payload(
    in_arguments: dict[str, object],
    *,
    journey_id: str | None = None,
    activity_id: str | None = None,
    definition_instance_id: str | None = None,
    activity_instance_id: str | None = None,
    ttl: int = 300,
    now: int | None = None,
) -> dict:
    """Return the decoded execute payload Journey Builder would send for these in-arguments.

    Journey Builder sends ``inArguments`` as a list with one single-key object per argument, in
    the order the activity declared them, rather than one object; the hub must cope with that.
    The payload carries ``iat`` and ``exp`` (``ttl`` seconds later), which the hub requires
    (``MC_JWT_REQUIRE_EXP``, ``MC_JWT_MAX_LIFETIME``). Marketing Cloud does not document them,
    and published decoded execute payloads show neither: an assumption, kept configurable.
    """
    issued = int(time.time()) if now is None else now
    return {
        "inArguments": [{name: value} for name, value in in_arguments.items()],
        "outArguments": [],
        "activityObjectID": str(uuid.uuid4()),
        "journeyId": journey_id or str(uuid.uuid4()),
        "activityId": activity_id or str(uuid.uuid4()),
        "definitionInstanceId": definition_instance_id or str(uuid.uuid4()),
        "activityInstanceId": activity_instance_id or str(uuid.uuid4()),
        "keyValue": str(in_arguments.get("SubscriberKey", "")),
        "mode": 0,
        "iat": issued,
        "exp": issued + ttl,
    }


def sign_execute(payload: dict, secret: str, *, algorithm: str = "HS256") -> bytes:
    """Sign ``payload`` as Journey Builder does and return the compact JWT as the request body."""
    token = jwt.encode(payload, secret, algorithm=algorithm)
    return token.encode("ascii")


def send_execute(
    url: str,
    in_arguments: dict,
    secret: str,
    *,
    session: requests.Session | None = None,
    timeout: float = 10,
    **payload_kwargs: Any,
) -> requests.Response:
    """POST one signed execute call to ``url``; extra keyword arguments go to build_execute_payload."""
    body = sign_execute(build_execute_payload(in_arguments, **payload_kwargs), secret)
    sender = session if session is not None else requests
    return sender.post(url, data=body, headers={"Content-Type": JWT_CONTENT_TYPE}, timeout=timeout)


# Eight obviously fake retail subscribers (example.com/.org mail, 555-01xx and Ofcom drama numbers).
# - Ava Thompson and Noah Fischer share nothing with anyone: each should become its own customer.
# - Sofia Marquez appears twice: once from the web shop, once from a store sign-up whose email was
#   typed in upper case with stray spaces; normalisation should match the two.
# - Liam and Emma O'Connor share a household address but not contact details.
# - Ava Thomson (sic) is Ava Thompson again: the match rules join her by phone and name.
# - Mia O'Connor shares Liam's mailbox: a possible match for a steward to review, not a merge.
DEMO_SUBSCRIBERS: list[dict[str, str]] = [
    {
        "SubscriberKey": "SK-DEMO-0001",
        "EmailAddress": "sofia.marquez@example.com",
        "SubscriberId": "71000001",
        "FirstName": "Sofia",
        "LastName": "Marquez",
        "MobileNumber": "+12025550101",
        "BirthDate": "1988-04-12",
        "Gender": "Female",
        "AddressLine1": "100 Sample Avenue",
        "City": "Springfield",
        "PostalCode": "62701",
        "StateProvince": "IL",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2024-03-02T09:15:00Z",
        "ModifiedDate": "2025-11-20T14:05:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0002",
        "EmailAddress": "ava.thompson@example.org",
        "SubscriberId": "71000002",
        "FirstName": "Ava",
        "LastName": "Thompson",
        "MobileNumber": "+13125550142",
        "BirthDate": "1995-09-30",
        "Gender": "Female",
        "AddressLine1": "42 Placeholder Road",
        "City": "Riverton",
        "PostalCode": "84065",
        "StateProvince": "UT",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2023-07-18T16:40:00Z",
        "ModifiedDate": "2025-10-01T08:30:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0003",
        "EmailAddress": "noah.fischer@example.com",
        "SubscriberId": "71000003",
        "FirstName": "Noah",
        "LastName": "Fischer",
        "MobileNumber": "+447700900417",
        "BirthDate": "1979-01-23",
        "Gender": "Male",
        "AddressLine1": "7 Demo Lane",
        "City": "Exampleton",
        "PostalCode": "AB1 2CD",
        "StateProvince": "Kent",
        "Country": "GB",
        "Status": "Active",
        "CreatedDate": "2022-11-05T11:00:00Z",
        "ModifiedDate": "2025-09-14T19:45:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0004",
        "EmailAddress": "  Sofia.MARQUEZ@Example.COM ",
        "SubscriberId": "71000004",
        "FirstName": "Sofia",
        "LastName": "Marquez",
        "MobileNumber": "+12025550101",
        "BirthDate": "1988-04-12",
        "Gender": "Female",
        "AddressLine1": "100 Sample Ave",
        "City": "Springfield",
        "PostalCode": "62701",
        "StateProvince": "IL",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2025-06-21T13:20:00Z",
        "ModifiedDate": "2025-06-21T13:20:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0005",
        "EmailAddress": "liam.oconnor@example.org",
        "SubscriberId": "71000005",
        "FirstName": "Liam",
        "LastName": "O'Connor",
        "MobileNumber": "+16175550177",
        "BirthDate": "1990-12-03",
        "Gender": "Male",
        "AddressLine1": "15 Fictional Court",
        "City": "Lakewood",
        "PostalCode": "02134",
        "StateProvince": "MA",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2024-01-09T10:05:00Z",
        "ModifiedDate": "2025-12-02T07:55:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0006",
        "EmailAddress": "emma.oconnor@example.com",
        "SubscriberId": "71000006",
        "FirstName": "Emma",
        "LastName": "O'Connor",
        "MobileNumber": "+16175550188",
        "BirthDate": "1992-05-17",
        "Gender": "Female",
        "AddressLine1": "15 Fictional Court",
        "City": "Lakewood",
        "PostalCode": "02134",
        "StateProvince": "MA",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2024-01-09T10:07:00Z",
        "ModifiedDate": "2025-08-27T12:10:00Z",
    },
    {
        # Ava again, from the loyalty app: surname mistyped, a new email, the same mobile.
        "SubscriberKey": "SK-DEMO-0007",
        "EmailAddress": "ava.t@example.net",
        "SubscriberId": "71000007",
        "FirstName": "Ava",
        "LastName": "Thomson",
        "MobileNumber": "(312) 555-0142",
        "Status": "Active",
        "CreatedDate": "2025-10-01T08:00:00Z",
        "ModifiedDate": "2025-10-01T08:00:00Z",
    },
    {
        # Mia O'Connor signed up with her brother Liam's address: the same mailbox, another person.
        "SubscriberKey": "SK-DEMO-0008",
        "EmailAddress": "liam.oconnor@example.org",
        "SubscriberId": "71000008",
        "FirstName": "Mia",
        "LastName": "O'Connor",
        "Status": "Active",
        "CreatedDate": "2025-11-11T11:00:00Z",
        "ModifiedDate": "2025-11-11T11:00:00Z",
    },
]


def send_demo(url: str, secret: str, subscribers: list[dict] | None = None) -> list[requests.Response]:
    """Send one execute call per subscriber (the demo set by default) over one keep-alive session."""
    chosen = DEMO_SUBSCRIBERS if subscribers is None else subscribers
    with requests.Session() as session:
        return [send_execute(url, subscriber, secret, session=session) for subscriber in chosen]
