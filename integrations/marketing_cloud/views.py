"""The Salesforce Marketing listener: Journey Builder's custom-activity execute call.

Journey Builder POSTs ``Content-Type: application/jwt`` with the raw body a JWT
signed HS256 with the installed package's JWT signing secret (``useJwt: true``).
A 200 keeps the contact in the journey; any 3xx/4xx/5xx ejects it, so the answer
comes only after the event and its queued task are committed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from typing import Any

import jwt
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.cim import CimValidationError, parse_cim_datetime
from hub import strict_json
from hub.api.bodies import read_body_or_problem
from hub.api.problems import problem
from integrations.choices import MARKETING_CLOUD, EventChannel
from integrations.intake import AcceptedEvent, request_headers, store_events, store_rejected
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.business_units import BUSINESS_UNIT_FIELD, BusinessUnit
from integrations.marketing_cloud.mapping import canonical_name, merge_in_arguments, subscriber_to_cim

JOURNEY_MAX_BODY = 256 * 1024
JWT_LEEWAY_SECONDS = 30

AcceptedSerializer = inline_serializer(
    "EventAccepted",
    {"status": serializers.CharField(), "eventId": serializers.IntegerField(), "duplicate": serializers.BooleanField()},
)


class TokenLifetimeError(jwt.InvalidTokenError):
    """A JWT valid for longer than MC_JWT_MAX_LIFETIME."""


def _check_header(token: bytes) -> None:
    """Strictly parse the header first: PyJWT reads it with json.loads before any signature check."""
    segment = token.split(b".", 1)[0]
    try:
        strict_json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):  # StrictJsonError is a ValueError
        raise jwt.DecodeError("the JWT header is not strict JSON") from None


class _StrictClaimsJWT(jwt.PyJWT):
    """PyJWT reading the claims with the hub's strict JSON (its hook for reading a payload differently)."""

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        claims = strict_json.loads(decoded["payload"])  # StrictJsonError names the claim
        if not isinstance(claims, dict):
            raise jwt.DecodeError("claims must be an object")
        return claims


_STRICT_CLAIMS_JWT = _StrictClaimsJWT()


def verify_journey_jwt(token: bytes, secret: str) -> dict[str, Any]:
    """Claims of a Journey Builder JWT.

    Raises jwt.InvalidTokenError for anything wrong with the token (its signature, format,
    expiry, a missing ``exp``, a lifetime over ``MC_JWT_MAX_LIFETIME``), and StrictJsonError
    for claims, correctly signed, that are not strict JSON (naming the claim).
    """
    if not secret:
        raise jwt.InvalidTokenError("MC_JWT_SECRET is not configured")
    _check_header(token)
    options = {"verify_aud": False, "require": ["exp"] if settings.MC_JWT_REQUIRE_EXP else []}
    # One pass: the signature (only HS256: any other alg in the header, none or RS256, is refused
    # by the algorithms list), the claims read as strict JSON, then PyJWT's exp, iat and nbf checks.
    claims = _STRICT_CLAIMS_JWT.decode(token, secret, algorithms=["HS256"], leeway=JWT_LEEWAY_SECONDS, options=options)
    if claims.get("exp") is not None:
        issued = int(claims["iat"]) if claims.get("iat") is not None else time.time()
        if int(claims["exp"]) - issued > settings.MC_JWT_MAX_LIFETIME:
            raise TokenLifetimeError(f"The JWT is valid for longer than {settings.MC_JWT_MAX_LIFETIME} s")
    return claims


def verify_journey_jwt_for_units(token: bytes, units: tuple[BusinessUnit, ...]) -> tuple[dict[str, Any], BusinessUnit]:
    """Claims of a Journey Builder JWT and the business unit whose signing secret verified it.

    Each unit's secret is tried in turn (PyJWT compares signatures in constant time). A token
    wrongly signed for every unit raises the error of the first unit; a token whose signature
    verifies but whose claims are wrong (expired, no exp) raises that unit's error at once.
    """
    first_error: jwt.InvalidTokenError | None = None
    for unit in units:
        try:
            return verify_journey_jwt(token, unit.jwt_secret), unit
        except jwt.InvalidSignatureError as exc:
            first_error = first_error or exc
        except jwt.InvalidTokenError as exc:
            if not unit.jwt_secret:
                first_error = first_error or exc
                continue
            raise
    raise first_error or jwt.InvalidTokenError("MC_JWT_SECRET is not configured")


def journey_idempotency_key(claims: dict[str, Any], subscriber_key: str) -> str:
    """Journey Builder retries carry the same activity instance; without one, hash the data."""
    definition = str(claims.get("definitionInstanceId") or "")
    instance = str(claims.get("activityInstanceId") or "")
    if definition and instance:
        return f"mc-journey:{definition}:{instance}:{hashlib.sha256(subscriber_key.encode()).hexdigest()[:16]}"
    stable = {k: claims.get(k) for k in ("inArguments", "keyValue", "journeyId", "activityId")}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()
    return f"mc-journey:sha256:{digest}"


def _refused(
    body: bytes,
    headers: dict[str, str],
    content_type: str,
    title: str,
    field: str,
    message: str,
    *,
    external_id: str = "",
    payload: Any = None,
) -> Response:
    """A 400 naming the field, with the refused call kept as a rejected event."""
    event = store_rejected(
        channel=EventChannel.JOURNEY,
        raw_body=body,
        headers=headers,
        content_type=content_type,
        reason=f"{field}: {message}",
        system=MARKETING_CLOUD,
        external_id=external_id,
        payload=payload,
    )
    return problem(
        status.HTTP_400_BAD_REQUEST,
        title,
        f"{field} {message}",
        errors=[{"field": field, "message": message}],
        eventId=event.pk,
    )


class JourneyExecuteView(APIView):
    """``POST /api/v1/marketing-cloud/journey/execute``"""

    authentication_classes: list[Any] = []  # the JWT signature is the authentication
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Journey Builder custom activity: execute",
        description="Raw body: a JWT (HS256, the installed package's JWT signing secret) whose claims hold "
        "inArguments, keyValue, journeyId, activityId, definitionInstanceId, activityInstanceId.",
        request={"application/jwt": OpenApiTypes.STR},
        responses={
            200: AcceptedSerializer,
            400: OpenApiResponse(
                description="Invalid subscriber data, or claims that are not strict JSON (problem+json naming it)"
            ),
            401: OpenApiResponse(
                description="Missing, unsigned, wrongly signed or expired JWT; no exp, or valid for longer than "
                "MC_JWT_MAX_LIFETIME (15 min by default)"
            ),
            413: OpenApiResponse(description="Body too large"),
            415: OpenApiResponse(description="Content-Type is not application/jwt"),
        },
        tags=["marketing-cloud"],
    )
    def post(self, request: Request) -> Response:
        body, too_large = read_body_or_problem(request._request, JOURNEY_MAX_BODY, "An execute call")
        if too_large:
            return too_large
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if content_type != "application/jwt":
            return problem(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "Journey Builder sends Content-Type: application/jwt (useJwt: true).",
            )
        headers = request_headers(request.META)
        try:
            claims, unit = verify_journey_jwt_for_units(body.strip(), business_units.units())
        except jwt.ExpiredSignatureError:
            return problem(status.HTTP_401_UNAUTHORIZED, "Expired token", "The JWT has expired.", field="body.exp")
        except jwt.MissingRequiredClaimError as exc:
            return problem(
                status.HTTP_401_UNAUTHORIZED,
                "Invalid token",
                f"The JWT has no {exc.claim} claim.",
                field=f"body.{exc.claim}",
            )
        except TokenLifetimeError as exc:
            return problem(status.HTTP_401_UNAUTHORIZED, "Invalid token", f"{exc}.", field="body.exp")
        except jwt.InvalidTokenError:
            return problem(
                status.HTTP_401_UNAUTHORIZED,
                "Invalid token",
                "The body is not a JWT signed HS256 with the installed package's secret.",
                field="body",
            )
        except strict_json.StrictJsonError as exc:
            return _refused(body, headers, content_type, "Invalid claims", exc.field, exc.message)

        try:
            args = merge_in_arguments(claims.get("inArguments"))
            cim = subscriber_to_cim(args)
        except CimValidationError as exc:
            subscriber_key = ""
            if isinstance(claims.get("inArguments"), list):
                for item in claims["inArguments"]:
                    for name, value in item.items() if isinstance(item, dict) else ():
                        if canonical_name(str(name)) == "SubscriberKey" and isinstance(value, str):
                            subscriber_key = value
            return _refused(
                body,
                headers,
                content_type,
                "Invalid subscriber data",
                exc.field,
                exc.message,
                external_id=subscriber_key,
                payload=claims,
            )

        subscriber_key = cim["externalIds"][0]["externalId"]
        if unit.mid:  # the unit whose secret verified the call: its cross reference records it
            cim[BUSINESS_UNIT_FIELD] = unit.mid
        occurred = cim["auditInfo"].get("updatedDate") or cim["auditInfo"].get("createdDate")
        accepted = AcceptedEvent(
            channel=EventChannel.JOURNEY,
            system=MARKETING_CLOUD,
            external_id=subscriber_key,
            idempotency_key=journey_idempotency_key(claims, subscriber_key),
            raw_body=body,
            headers=headers,
            content_type=content_type,
            payload=claims,
            individual_cim=cim,
            occurred_at=parse_cim_datetime(occurred, "ModifiedDate") if occurred else None,
        )
        [(event, duplicate)] = store_events([accepted])
        return Response({"status": "accepted", "eventId": event.pk, "duplicate": duplicate})
