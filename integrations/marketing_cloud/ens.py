"""The Event Notification Service callback: unsubscribes (and the rest) from Marketing Cloud.

ENS POSTs JSON arrays of up to 1,000 events, signed in ``x-sfmc-ens-signature``
(base64 HMAC-SHA256 of the raw body, keyed with the callback's signature key: its
base64 decoded, or its bytes as they are, see ``_key_readings``), and wants a 200-204
within 3 seconds, else it retries and may suspend the callback. So the view verifies,
stores the batch in one insert (redeliveries land on the same rows by ``compositeId``),
queues one task and answers; the task applies the events.

An unsubscribe names the subscriber by Marketing Cloud's numeric SubscriberID
(``composite.subscriberId``), matched only against the SubscriberIDs the hub holds
(``CrossReference.system_record_id``), never against a SubscriberKey; when no record
holds it, by the address (``info.to``). With several business units, the unit whose signature
key verified the batch (``EnsNotification.business_unit``) is the unit the SubscriberID is
looked up in: another unit's subscriber with the same ID is another person, left alone. From the All Subscribers list
(``MC_ALL_SUBSCRIBERS_LIST_ID``) it is a global do-not-market; from any other list
(``composite.listId``), that list's consent only.

Registration: ``manage.py mc_ens_register`` opens a registration (an ``EnsCallback``
row with no callback ID yet) and asks ENS to create the callback; while that request
is open, ENS POSTs ``{callbackId, verificationKey}`` here, unsigned. The handshake is
stored only into a registration that is waiting for one and was opened within
``ENS_HANDSHAKE_WINDOW_SECONDS``; it never replaces a key already stored, and a
verified callback's never. The command then confirms the key through
``/platform/v1/ens-verify``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.choices import ContactPointKind
from customers.models import ContactPoint, CrossReference, Individual
from customers.normalize import normalize_email
from customers.stewardship import OptOut, record_opt_outs
from hub import strict_json
from hub.api.bodies import read_body_or_problem
from hub.api.problems import problem
from integrations.choices import MARKETING_CLOUD
from integrations.intake import json_safe
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.models import EnsCallback, EnsNotification
from integrations.queue import enqueue_once, task_started

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "HTTP_X_SFMC_ENS_SIGNATURE"
EMAIL_UNSUBSCRIBE = "EngagementEvents.EmailUnsubscribe"
APPLY_TASK = "integrations.marketing_cloud.ens.apply_notifications"
APPLY_FLAG = "ens-apply"
MAX_BATCH = 1000
ENS_MAX_BODY = 4 * 1024 * 1024
# ENS's callback IDs are UUIDs and its verification keys base64; these bounds admit those with
# room to spare, and nothing that could break a log line or outgrow the columns.
CALLBACK_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
VERIFICATION_KEY_PATTERN = re.compile(r"[A-Za-z0-9+/=_.-]{1,200}")
HANDSHAKE_FIELDS = {
    "callbackId": (CALLBACK_ID_PATTERN, "must be a string of 1-64 letters, digits, '.', '_' or '-'"),
    "verificationKey": (VERIFICATION_KEY_PATTERN, "must be a string of 1-200 base64 characters"),
}
LOGGED_VALUE_LIMIT = 100
ENS_CONSENT_SOURCE = "MARKETING_CLOUD_ENS"
# Marketing Cloud's SubscriberIDs and ListIDs are integers (sent as strings in ENS events).
_NUMERIC_ID = re.compile(r"[0-9]{1,19}")


def _key_readings(signature_key: str) -> list[bytes]:
    """The HMAC keys a callback's signature key may stand for.

    Salesforce documents the signature as the base64 HMAC-SHA256 of the body "with the
    signature key" but not how the key is read; public consumers differ (Prismatic's
    connector and a production NestJS consumer base64-decode it, the Flue framework uses
    its bytes as they are). A batch signed either way is accepted: refusing every batch
    would make ENS retry, then suspend the callback, and the unsubscribes would be lost.
    """
    readings = [signature_key.encode("utf-8")]
    try:
        decoded = base64.b64decode(signature_key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if decoded:
        readings.append(decoded)
    return readings


def signature_keys() -> list[str]:
    """Every business unit's configured key (the single unit's is MC_ENS_SIGNATURE_KEY), then the stored ones."""
    keys = [unit.ens_signature_key for unit in business_units.units() if unit.ens_signature_key]
    keys += list(EnsCallback.objects.exclude(signature_key="").values_list("signature_key", flat=True))
    return keys


def signature_is_valid(body: bytes, signature: str, keys: list[str]) -> bool:
    """Whether ``signature`` signs ``body`` under any known key (rotation keeps two alive), read either way."""
    return signing_key(body, signature, keys) is not None


def signing_key(body: bytes, signature: str, keys: list[str]) -> str | None:
    """The first of ``keys`` under which ``signature`` signs ``body``, read either way; None for none.

    Every candidate is computed and compared in constant time, with no early exit, so the
    answer's timing says nothing about which key or reading came close.
    """
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    found: str | None = None
    for key in keys:
        for key_bytes in _key_readings(key):
            expected = hmac.new(key_bytes, body, hashlib.sha256).digest()
            matches = hmac.compare_digest(expected, given)
            found = key if matches and found is None else found
    return found


def unit_of_key(key: str) -> str:
    """The MID of the business unit whose ENS key this is: configured for it, or stored by
    ``mc_ens_register`` for its callback; '' when no unit is known (a single unit's stored key)."""
    configured = next((unit.mid for unit in business_units.units() if unit.ens_signature_key == key), None)
    if configured is not None:
        return configured
    stored = EnsCallback.objects.filter(signature_key=key).values_list("business_unit", flat=True).first()
    return stored or ""


def awaiting_handshake() -> QuerySet[EnsCallback]:
    """Registrations ``mc_ens_register`` opened that no handshake has named yet (in or past their window)."""
    return EnsCallback.objects.filter(callback_id__isnull=True, verified_at__isnull=True)


def unfinished_registrations() -> QuerySet[EnsCallback]:
    """Callbacks that never got ENS's signature key or verification: no batch is signed with them."""
    return EnsCallback.objects.filter(verified_at__isnull=True, signature_key="")


def handshake_window_start() -> dt.datetime:
    """Registrations opened before this no longer take a handshake."""
    return timezone.now() - dt.timedelta(seconds=settings.ENS_HANDSHAKE_WINDOW_SECONDS)


def _handshake_errors(data: dict[str, Any]) -> list[dict[str, str]]:
    errors = []
    for field, (pattern, message) in HANDSHAKE_FIELDS.items():
        value = data[field]
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            errors.append({"field": field, "message": message})
    return errors


def _loggable(value: Any) -> str:
    """A refused value, cut short for the log (the log formatter escapes its control characters)."""
    return value[:LOGGED_VALUE_LIMIT] if isinstance(value, str) else f"<{type(value).__name__}>"


def _store_handshake(callback_id: str, verification_key: str) -> Response | None:
    """Store the handshake into the registration waiting for it; the refusal when there is none."""
    with transaction.atomic():
        existing = EnsCallback.objects.select_for_update().filter(callback_id=callback_id).first()
        if existing is not None and existing.verified_at is not None:
            return problem(
                status.HTTP_409_CONFLICT,
                "Callback already verified",
                f"Callback {callback_id} is verified; its verification key is never replaced.",
                field="callbackId",
            )
        if existing is not None:
            if hmac.compare_digest(existing.verification_key.encode(), verification_key.encode()):
                return None  # ENS repeating the same handshake
            return _already_received(callback_id)
        registration = (
            awaiting_handshake()
            .filter(created_at__gte=handshake_window_start())
            .order_by("created_at", "pk")
            .select_for_update(skip_locked=True)
            .first()
        )
        if registration is None:
            if awaiting_handshake().exists():
                return problem(
                    status.HTTP_410_GONE,
                    "Registration window passed",
                    f"The ENS registration waiting for a handshake was opened more than "
                    f"{settings.ENS_HANDSHAKE_WINDOW_SECONDS} s ago (HUB_ENS_HANDSHAKE_WINDOW_SECONDS); "
                    "run manage.py mc_ens_register again.",
                    field="callbackId",
                )
            return problem(
                status.HTTP_404_NOT_FOUND,
                "Unknown callback",
                f"No ENS registration (manage.py mc_ens_register) is waiting for callback {callback_id}.",
                field="callbackId",
            )
        registration.callback_id = callback_id
        registration.verification_key = verification_key
        registration.handshake_at = timezone.now()
        try:
            with transaction.atomic():
                registration.save(update_fields=["callback_id", "verification_key", "handshake_at"])
        except IntegrityError:
            # A concurrent request stored this callback ID into another registration first.
            return _already_received(callback_id)
    return None


def _already_received(callback_id: str) -> Response:
    return problem(
        status.HTTP_409_CONFLICT,
        "Handshake already received",
        f"Another verification key is already stored for callback {callback_id}; it is not replaced.",
        field="verificationKey",
    )


# timestampUTC is epoch milliseconds; outside 1900-2100 it is no event time (and some cannot be one).
_MIN_TIMESTAMP_MS = int(dt.datetime(1900, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
_MAX_TIMESTAMP_MS = int(dt.datetime(2101, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def _batch_errors(events: list[Any]) -> list[dict[str, str]]:
    """What would stop a batch's events from being stored, naming each field."""
    errors = []
    for i, event in enumerate(events):
        timestamp = event.get("timestampUTC") if isinstance(event, dict) else None
        is_number = isinstance(timestamp, int | float) and not isinstance(timestamp, bool)
        if is_number and not _MIN_TIMESTAMP_MS <= timestamp < _MAX_TIMESTAMP_MS:
            errors.append({"field": f"[{i}].timestampUTC", "message": "must be epoch milliseconds within 1900-2100"})
    return errors


def _event_row(event: dict[str, Any], index: int) -> EnsNotification:
    event = json_safe(event)
    composite = event.get("composite") if isinstance(event.get("composite"), dict) else {}
    info = event.get("info") if isinstance(event.get("info"), dict) else {}
    timestamp = event.get("timestampUTC")
    occurred = None
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        occurred = dt.datetime.fromtimestamp(timestamp / 1000, tz=dt.UTC)
    composite_id = str(event.get("compositeId") or "")
    if not composite_id:
        # No ID to deduplicate on: the event's own bytes are its identity.
        composite_id = "sha256:" + hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()
    return EnsNotification(
        composite_id=composite_id[:200],
        event_type=str(event.get("eventCategoryType") or "unknown")[:100],
        occurred_at=occurred,
        mid=str(event.get("mid") or "")[:20],
        subscriber_id=str(composite.get("subscriberId") or "")[:40],
        email_address=str(info.get("to") or "")[:320],
        payload=event,
    )


class EnsCallbackView(APIView):
    """``POST /api/v1/marketing-cloud/ens``"""

    authentication_classes: list[Any] = []  # the HMAC signature is the authentication
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Marketing Cloud ENS callback (verification handshake and signed event batches)",
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            200: OpenApiTypes.OBJECT,
            400: OpenApiResponse(description="Not a batch or a handshake, or a malformed callbackId/verificationKey"),
            401: OpenApiResponse(description="Missing or invalid x-sfmc-ens-signature"),
            404: OpenApiResponse(description="Handshake: no registration is waiting for it"),
            409: OpenApiResponse(description="Handshake: the callback is verified, or has another key stored"),
            410: OpenApiResponse(description="Handshake: the waiting registration's window has passed"),
            413: OpenApiResponse(description="Body too large"),
        },
        tags=["marketing-cloud"],
    )
    def post(self, request: Request) -> Response:
        body, too_large = read_body_or_problem(request._request, ENS_MAX_BODY, "An ENS batch")
        if too_large:
            return too_large
        malformed: strict_json.StrictJsonError | None = None
        try:
            data = strict_json.loads(body)
        except strict_json.StrictJsonError as exc:
            data, malformed = None, exc
        if isinstance(data, dict) and set(data) >= {"callbackId", "verificationKey"}:
            return self._handshake(data)
        signature = request.META.get(SIGNATURE_HEADER, "")
        key = signing_key(body, signature, signature_keys()) if signature else None
        if key is None:
            return problem(
                status.HTTP_401_UNAUTHORIZED,
                "Invalid signature",
                "x-sfmc-ens-signature does not match this body under any known key.",
                field="header.x-sfmc-ens-signature",
            )
        if malformed is not None:
            return problem(
                status.HTTP_400_BAD_REQUEST,
                "Invalid batch",
                errors=[{"field": malformed.field, "message": malformed.message}],
            )
        if not isinstance(data, list):
            return problem(
                status.HTTP_400_BAD_REQUEST,
                "Invalid batch",
                errors=[{"field": "body", "message": "must be a JSON array of events"}],
            )
        if len(data) > MAX_BATCH:
            return problem(
                status.HTTP_400_BAD_REQUEST,
                "Invalid batch",
                errors=[{"field": "body", "message": f"at most {MAX_BATCH} events"}],
            )
        errors = _batch_errors(data)
        if errors:
            return problem(status.HTTP_400_BAD_REQUEST, "Invalid batch", errors=errors[:20])
        rows = [_event_row(e, i) for i, e in enumerate(data) if isinstance(e, dict)]
        unit = unit_of_key(key)  # the business unit whose key signed the batch
        for row in rows:
            row.business_unit = unit
        with transaction.atomic():
            EnsNotification.objects.bulk_create(rows, ignore_conflicts=True, batch_size=MAX_BATCH)
            enqueue_once(APPLY_TASK, flag=APPLY_FLAG)
        return Response({"received": len(rows)})

    def _handshake(self, data: dict[str, Any]) -> Response:
        errors = _handshake_errors(data)
        if errors:
            fields = ", ".join(error["field"] for error in errors)
            logger.warning("ENS handshake refused: invalid %s (callbackId %s)", fields, _loggable(data["callbackId"]))
            return problem(status.HTTP_400_BAD_REQUEST, "Invalid handshake", errors=errors)
        callback_id = data["callbackId"]
        refusal = _store_handshake(callback_id, data["verificationKey"])
        if refusal is not None:
            logger.warning("ENS handshake refused for callback %s: %s", callback_id, refusal.data["title"])
            return refusal
        logger.info("ENS verification handshake stored for callback %s", callback_id)
        return Response({"status": "verification stored", "callbackId": callback_id})


def apply_notifications(limit: int = 5000) -> str:
    """django-q2 entry point: act on received notifications (unsubscribes: do-not-market or a list's consent).

    The whole batch is one transaction: the golden records' opt-outs are written together,
    through the same unit of work as every other golden-record change.
    """
    task_started(APPLY_FLAG)
    applied = unmatched = stored = 0
    with transaction.atomic():
        pending = list(
            EnsNotification.objects.select_for_update(skip_locked=True)
            .filter(status=EnsNotification.RECEIVED)
            .order_by("occurred_at", "id")[:limit]
        )
        now = timezone.now()
        unsubscribes = [n for n in pending if n.event_type == EMAIL_UNSUBSCRIBE]
        targets = _individuals_for(unsubscribes)
        opt_outs = [
            opt_out
            for n in unsubscribes
            for individual_id in targets.get(n.pk, [])
            for opt_out in _opt_outs(n, individual_id, now)
        ]
        record_opt_outs(opt_outs)
        master_ids = dict(
            Individual.objects.filter(pk__in={o.individual_id for o in opt_outs}).values_list("pk", "master_id")
        )
        for notification in pending:
            notification.applied_at = now
            if notification.event_type != EMAIL_UNSUBSCRIBE:
                notification.status = EnsNotification.STORED
                stored += 1
            elif not targets.get(notification.pk):
                notification.status = EnsNotification.UNMATCHED
                unmatched += 1
            else:
                notification.status = EnsNotification.APPLIED
                notification.master_id = master_ids.get(targets[notification.pk][0], "")
                applied += 1
        EnsNotification.objects.bulk_update(pending, ["status", "applied_at", "master_id"])
    if len(pending) == limit:
        with transaction.atomic():
            enqueue_once(APPLY_TASK, flag=APPLY_FLAG)
    return f"{applied} applied, {unmatched} unmatched, {stored} stored"


def _list_id_of(notification: EnsNotification) -> str:
    """The list an event's email went to (``composite.listId``), '' when it names none."""
    composite = notification.payload.get("composite") if isinstance(notification.payload, dict) else None
    list_id = str(composite.get("listId") or "").strip() if isinstance(composite, dict) else ""
    return list_id if _NUMERIC_ID.fullmatch(list_id) else ""


def _opt_outs(notification: EnsNotification, individual_id: int, now: dt.datetime) -> list[OptOut]:
    """What an unsubscribe means for one golden record: a global opt-out, a list's, or (unsure) both."""
    since = notification.occurred_at or now
    actor = f"ens:{notification.composite_id}"[:120]
    list_id = _list_id_of(notification)
    all_subscribers = settings.MC_ALL_SUBSCRIBERS_LIST_ID
    result = []
    # No list named, the All Subscribers list, or no way to tell (the setting unset): all marketing.
    if not list_id or list_id in all_subscribers or not all_subscribers:
        result.append(OptOut(individual_id, since, ENS_CONSENT_SOURCE, actor))
    if list_id and list_id not in all_subscribers:
        subscription = (MARKETING_CLOUD, list_id)
        result.append(OptOut(individual_id, since, ENS_CONSENT_SOURCE, actor, subscription=subscription))
    return result


def _individuals_for(notifications: list[EnsNotification]) -> dict[int, list[int]]:
    """The golden records each engagement event is about: by SubscriberID, else by email address.

    ``composite.subscriberId`` is compared with the SubscriberIDs the hub holds and with
    nothing else: a numeric SubscriberKey that happens to equal it is another person.
    """
    by_subscriber: dict[str, list[tuple[str, int]]] = {}
    subscriber_ids = {n.subscriber_id for n in notifications if _is_subscriber_id(n.subscriber_id)}
    if subscriber_ids:
        rows = (
            CrossReference.objects.filter(system=MARKETING_CLOUD, system_record_id__in=subscriber_ids)
            .order_by("individual_id")
            .values_list("system_record_id", "business_unit", "individual_id")
            .distinct()
        )
        for subscriber_id, unit, individual_id in rows:
            # One subscriber under two keys (a key changed in Marketing Cloud) may sit on two records.
            by_subscriber.setdefault(subscriber_id, []).append((unit, individual_id))
    result: dict[int, list[int]] = {}
    by_email: dict[int, str] = {}
    for notification in notifications:
        # The unit whose key verified the batch: only its subscribers are the one the event names.
        scope = _scope_of(notification.business_unit)
        held = sorted(
            {i for unit, i in by_subscriber.get(notification.subscriber_id, []) if not scope or unit in scope}
        )
        if held:
            result[notification.pk] = held
        elif notification.email_address:
            try:
                by_email[notification.pk] = normalize_email(notification.email_address)
            except ValueError:
                continue
    if by_email:
        owners: dict[str, list[int]] = {}
        rows = (
            ContactPoint.objects.filter(kind=ContactPointKind.EMAIL, value_key__in=set(by_email.values()))
            .order_by("individual_id")
            .values_list("value_key", "individual_id")
        )
        for value_key, individual_id in rows:
            owners.setdefault(value_key, []).append(individual_id)
        # An unsubscribe is about the address: every person using it stops getting mail on it.
        for pk, key in by_email.items():
            if owners.get(key):
                result[pk] = owners[key]
    return result


def _scope_of(mid: str) -> tuple[str, ...]:
    """The cross references a notification verified by unit ``mid``'s key may reach; () for any.

    Blank (a key no unit is known for) reaches any; a MID configured no more, only its own records.
    """
    if not mid:
        return ()
    unit = business_units.unit_for_mid(mid)
    return business_units.cross_reference_scope(unit) if unit is not None else (mid,)


def _is_subscriber_id(value: str) -> bool:
    # SubscriberIDs are positive integers; events without a subscriber carry "0" (the SMS examples).
    return bool(_NUMERIC_ID.fullmatch(value)) and int(value) > 0
