"""Plays Marketing Cloud's Event Notification Service (ENS): builds, signs and sends event batches.

ENS POSTs a JSON array of events (at most the callback's ``maxBatchSize``) to a registered callback
URL, with an ``x-sfmc-ens-signature`` header: the base64 HMAC-SHA256 of the exact body bytes, keyed
with the ``signatureKey`` that ``POST /platform/v1/ens-callbacks`` returned (only) at creation.
This module builds realistic events, signs them the same way and sends them, so the hub's ENS
callback can be exercised without a Marketing Cloud account. No Django imports, and ``requests``
is imported only inside :func:`send_batch`, so the stdlib-only sandbox server can share the signing
code.

Event shapes follow Salesforce's "Engagement Email Events" reference
(developer.salesforce.com/docs/marketing/marketing-cloud/guide/engagement_email_events.html).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

__all__ = [
    "ALL_SUBSCRIBERS_LIST_ID",
    "EMAIL_OPEN",
    "EMAIL_UNSUBSCRIBE",
    "KEY_ENCODINGS",
    "SIGNATURE_HEADER",
    "email_open_event",
    "email_unsubscribe_event",
    "encode_batch",
    "new_signature_key",
    "send_batch",
    "sign_ens",
    "signature_key_bytes",
    "subscriber_id_for",
    "tamper_signature",
    "verify_ens",
]

SIGNATURE_HEADER = "x-sfmc-ens-signature"
EMAIL_UNSUBSCRIBE = "EngagementEvents.EmailUnsubscribe"
EMAIL_OPEN = "EngagementEvents.EmailOpen"
DEFAULT_MID = 100000001
# This tenant's All Subscribers list: every subscriber of the business unit is on it, and sends to
# data extensions carry its ListID (the documented click example's link names "All Subscribers" for
# listId 69238). Events use it unless given another list; the hub learns it from
# MC_ALL_SUBSCRIBERS_LIST_ID.
ALL_SUBSCRIBERS_LIST_ID = "10001"
# Marketing Cloud's system clock runs on US Central Standard Time all year round (UTC-6, no
# daylight saving). The documented EmailUnsubscribe example shows it: info.unsubscribeDate is
# exactly six hours behind timestampUTC, i.e. local CST written as if it were epoch UTC.
_SYSTEM_TIME_OFFSET_MS = 6 * 60 * 60 * 1000
# Job IDs count up from a random start, so every event built in one process gets its own
# compositeId unless the caller pins one (to test de-duplication, say).
_JOB_IDS = itertools.count(1_000_000 + secrets.randbelow(8_000_000))
_DEFAULT_USER_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"


# How a tenant may turn the signature key into HMAC key bytes (see :func:`signature_key_bytes`).
KEY_ENCODINGS = ("base64", "raw")


def signature_key_bytes(signature_key: str, key_encoding: str = "base64") -> bytes:
    """Return the HMAC key bytes for a callback's ``signatureKey``, read as ``key_encoding`` says.

    Salesforce's Notification Signing page only says to "use the callback signature key" and its
    pseudocode is cut off before the key handling. The key it returns is 32 random bytes in base64
    (the documented example ``V27FXfqI3DnhfQW1bhFDeJixpt8eDAY5R24UJI3cK6M=`` decodes to exactly 32
    bytes). Public consumers that verify real ENS traffic disagree: Prismatic's SFMC connector and a
    production NestJS consumer base64-decode it (``"base64"``, the default), the Flue framework uses
    the key's UTF-8 text as it is (``"raw"``). The sandbox signs either way, so a hub can be tested
    against both readings.
    """
    if not signature_key:
        raise ValueError("an ENS signature key must not be empty")
    if key_encoding == "raw":
        return signature_key.encode("utf-8")
    if key_encoding != "base64":
        raise ValueError(f"key_encoding must be one of {KEY_ENCODINGS}, not {key_encoding!r}")
    try:
        return base64.b64decode(signature_key, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("an ENS signature key is base64, as returned by POST /platform/v1/ens-callbacks") from error


def new_signature_key() -> str:
    """A fresh ``signatureKey`` in the format ENS issues: 32 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign_ens(body: bytes, signature_key: str, key_encoding: str = "base64") -> str:
    """Return the ``x-sfmc-ens-signature`` header value for this exact request body."""
    digest = hmac.new(signature_key_bytes(signature_key, key_encoding), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_ens(body: bytes, signature: str, signature_key: str, key_encoding: str = "base64") -> bool:
    """True when ``signature`` is the valid ENS signature of ``body``; compares in constant time."""
    expected = sign_ens(body, signature_key, key_encoding)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


def tamper_signature(signature: str) -> str:
    """Return a well-formed signature (base64 of 32 bytes) that no longer matches.

    Flipping bits of the digest rather than sending garbage makes sure the hub rejects it because
    the HMAC differs, not because the header failed to parse.
    """
    digest = bytearray(base64.b64decode(signature))
    digest[0] ^= 0xFF
    return base64.b64encode(bytes(digest)).decode("ascii")


def encode_batch(events: list[dict[str, Any]]) -> bytes:
    """Serialise a batch the way it goes on the wire; the signature covers exactly these bytes."""
    # Compact, with non-ASCII left as UTF-8: a hub that re-serialises the parsed JSON before
    # checking the signature (instead of using the raw body) gets a mismatch, as it would for real.
    return json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def subscriber_id_for(subscriber_key: str) -> str:
    """A stable stand-in for Marketing Cloud's numeric SubscriberID of ``subscriber_key``.

    Real engagement events identify the subscriber only by ``composite.subscriberId`` (and the
    address in ``info.to`` for unsubscribes), never by subscriber key; the SubscriberID is a number
    the tenant assigns, unrelated to the key, even when the key is a number itself. Tests that need
    to map an event back to a subscriber use this (or pass ``subscriber_id=`` explicitly).
    """
    digest = hashlib.sha256(subscriber_key.encode("utf-8")).digest()
    candidate = 100_000_000 + int.from_bytes(digest[:4], "big") % 900_000_000
    if str(candidate) == subscriber_key:  # a numeric key that happens to hash to itself
        candidate = 100_000_000 + (candidate + 1 - 100_000_000) % 900_000_000
    return str(candidate)


def _subscriber_id(subscriber_key: str, subscriber_id: str | int | None) -> str:
    if subscriber_id is None:
        return subscriber_id_for(subscriber_key)
    text = str(subscriber_id)
    if isinstance(subscriber_id, bool) or not (text.isascii() and text.isdigit() and int(text) > 0):
        raise ValueError(f"a SubscriberID is a positive integer, not {subscriber_id!r}")
    return text


def _list_id(list_id: str | int | None) -> str:
    if list_id is None:
        return ALL_SUBSCRIBERS_LIST_ID
    text = str(list_id)
    if isinstance(list_id, bool) or not (text.isascii() and text.isdigit() and int(text) > 0):
        raise ValueError(f"a ListID is a positive integer, not {list_id!r}")
    return text


def _envelope(
    category_type: str,
    subscriber_key: str,
    *,
    list_id: str | int | None,
    mid: int,
    eid: int | None,
    timestamp_ms: int | None,
    composite_id: str | None,
    subscriber_id: str | int | None,
) -> dict[str, Any]:
    timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    composite = {
        "jobId": str(next(_JOB_IDS)),
        "batchId": str(1000 + secrets.randbelow(90_000)),
        "listId": _list_id(list_id),
        "subscriberId": _subscriber_id(subscriber_key, subscriber_id),
    }
    if composite_id is None:
        # The documented examples compose it as jobId.listId.batchId.subscriberId.
        composite_id = ".".join(composite[name] for name in ("jobId", "listId", "batchId", "subscriberId"))
    else:
        parts = composite_id.split(".")
        if len(parts) == 4 and all(part.isdigit() for part in parts):
            # Keep the broken-down object consistent with a pinned compositeId.
            composite.update(zip(("jobId", "listId", "batchId", "subscriberId"), parts, strict=True))
    return {
        "eventCategoryType": category_type,
        "timestampUTC": timestamp,
        "compositeId": composite_id,
        # Engagement events carry the literal "NA": send definitions only exist for transactional sends.
        "definitionKey": "NA",
        "definitionId": "NA",
        "mid": mid,
        "eid": mid if eid is None else eid,
        "composite": composite,
    }


def email_unsubscribe_event(
    subscriber_key: str,
    *,
    email_address: str | None = None,
    list_id: str | int | None = None,
    mid: int = DEFAULT_MID,
    timestamp_ms: int | None = None,
    composite_id: str | None = None,
    subscriber_id: str | int | None = None,
    eid: int | None = None,
    method: str = "Click",
) -> dict[str, Any]:
    """A realistic ``EngagementEvents.EmailUnsubscribe`` event, with a unique compositeId by default.

    Per Salesforce's reference, ``info`` holds ``to`` (the address), ``domain``, ``unsubscribeDate``
    and ``unsubscribeMethod`` ("Click" or "Reply"); the list is ``composite.listId`` and the
    subscriber is ``composite.subscriberId``, a positive number (ValueError otherwise). There is no
    subscriberKey anywhere in this event, so ``subscriber_key`` only seeds the subscriberId (see
    :func:`subscriber_id_for`) and stands in for ``to`` when it is itself an email address and
    ``email_address`` is not given. With no address at all, ``to`` and ``domain`` are left out
    rather than invented. ``list_id`` defaults to the All Subscribers list; another list's ID makes
    it an unsubscribe from that list only.
    """
    event = _envelope(
        EMAIL_UNSUBSCRIBE,
        subscriber_key,
        list_id=list_id,
        mid=mid,
        eid=eid,
        timestamp_ms=timestamp_ms,
        composite_id=composite_id,
        subscriber_id=subscriber_id,
    )
    address = email_address if email_address is not None else (subscriber_key if "@" in subscriber_key else None)
    info: dict[str, Any] = {}
    if address:
        info["to"] = address
        info["domain"] = address.rpartition("@")[2]
    info["unsubscribeDate"] = event["timestampUTC"] - _SYSTEM_TIME_OFFSET_MS
    info["unsubscribeMethod"] = method
    event["info"] = info
    return event


def email_open_event(
    subscriber_key: str,
    *,
    email_address: str | None = None,
    list_id: str | int | None = None,
    mid: int = DEFAULT_MID,
    timestamp_ms: int | None = None,
    composite_id: str | None = None,
    subscriber_id: str | int | None = None,
    eid: int | None = None,
    ip_address: str = "203.0.113.7",
    user_agent: str = _DEFAULT_USER_AGENT,
) -> dict[str, Any]:
    """A realistic ``EngagementEvents.EmailOpen`` event: the "other event type" in tests.

    Takes the same arguments as :func:`email_unsubscribe_event` so the two are interchangeable in
    test code; ``email_address`` is accepted but unused, as open events carry no address. ``info``
    holds ``ipAddress``, ``userAgent`` and ``location`` (empty when ENS could not place the IP).
    """
    event = _envelope(
        EMAIL_OPEN,
        subscriber_key,
        list_id=list_id,
        mid=mid,
        eid=eid,
        timestamp_ms=timestamp_ms,
        composite_id=composite_id,
        subscriber_id=subscriber_id,
    )
    # The documented open and click examples (not the unsubscribe one) also say which channel.
    event["channel"] = "email"
    event["info"] = {"ipAddress": ip_address, "userAgent": user_agent, "location": {}}
    return event


def send_batch(
    url: str,
    events: list[dict[str, Any]],
    signature_key: str,
    *,
    session: requests.Session | None = None,
    timeout: float = 3.0,
    tamper: bool = False,
    key_encoding: str = "base64",
) -> requests.Response:
    """POST one signed notification batch to ``url`` as ENS does and return the response.

    ENS gives a callback three seconds to answer 200-204, hence the default ``timeout``. With
    ``tamper`` the signature is well-formed but wrong; ``key_encoding`` says how the key is read
    (see :func:`signature_key_bytes`). Batch size is the caller's business: ENS never sends more
    than the callback's ``maxBatchSize`` (100-1000) events in one request.
    """
    import requests  # here, not at the top: the stdlib-only sandbox server imports this module

    body = encode_batch(events)
    signature = sign_ens(body, signature_key, key_encoding)
    if tamper:
        signature = tamper_signature(signature)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
    poster = session if session is not None else requests
    return poster.post(url, data=body, headers=headers, timeout=timeout)
