"""Stewardship API: merge, unmerge, not-a-match, pins, the suspect queue, sources and history.

Every write is a ``customers.stewardship`` action: one transaction, recorded in the
record's history with the API key as the actor. Old (merged) master IDs are
accepted everywhere and resolve to their survivor.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from django.db import models
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.choices import CandidateStatus
from customers.models import CrossReference, HistoryEntry, Individual, MatchCandidate, NotAMatch, is_master_id
from customers.resolution.survivorship import SURVIVING_FIELDS
from customers.stewardship import (
    ResolutionError,
    clear_not_a_match,
    mark_not_a_match,
    merge_individuals,
    pin_value,
    pinnable_value,
    resolve_master_id,
    unmerge_cross_reference,
    unpin_value,
)
from hub.paging import ApiCursorPagination


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the record's state."
    default_code = "conflict"


_ERRORS = {
    400: OpenApiResponse(description="Invalid body (problem details name the field)"),
    401: OpenApiResponse(description="Missing or invalid API key"),
    403: OpenApiResponse(description="The key lacks the scope"),
    404: OpenApiResponse(description="No such golden record"),
    409: OpenApiResponse(description="Not possible in the record's state (merged, erased...)"),
    429: OpenApiResponse(description="Throttled (per API key)"),
}


def _max_length(model: type[models.Model], name: str) -> int | None:
    """The column's length: a longer value could never be stored (PostgreSQL refuses it)."""
    return model._meta.get_field(name).max_length


# No stored source record ID holds a control character (intake removes them), and PostgreSQL
# refuses NUL outright.
_NO_CONTROL_CHARACTERS = RegexValidator(
    r"[\x00-\x1f\x7f-\x9f]", "must not contain control characters", inverse_match=True
)


def _master_id_shaped(value: str) -> None:
    if not is_master_id(value):
        raise serializers.ValidationError("is not a master ID (a UUID, as the hub issues them)")


class MasterIdField(serializers.CharField):
    """A golden record's master ID: a value of another shape is a 400 naming the field."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", _max_length(Individual, "master_id"))
        kwargs.setdefault("help_text", "A golden record's master ID (a UUID); a merged one stands for its survivor.")
        super().__init__(**kwargs)
        self.validators.append(_master_id_shaped)


class StringField(serializers.CharField):
    """A CharField that takes JSON strings only (DRF's own turns numbers into text)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class OtherRecordSerializer(serializers.Serializer):
    masterId = MasterIdField()


class NotAMatchRequestSerializer(serializers.Serializer):
    masterId = MasterIdField()
    reason = serializers.CharField(required=False, allow_blank=True, max_length=_max_length(NotAMatch, "reason"))


class SourceRecordRefSerializer(serializers.Serializer):
    externalIdType = serializers.CharField(
        max_length=_max_length(CrossReference, "system"), validators=[_NO_CONTROL_CHARACTERS]
    )
    externalId = serializers.CharField(
        max_length=_max_length(CrossReference, "external_id"), validators=[_NO_CONTROL_CHARACTERS]
    )


class PinRequestSerializer(serializers.Serializer):
    """``value``: text that fits the attribute's column (a birth date as YYYY-MM-DD), or null."""

    value = StringField(allow_null=True, allow_blank=True, trim_whitespace=False)

    def validate_value(self, value: str | None) -> str | None:
        try:
            pinnable_value(self.context["attribute"], value)
        except ValueError as exc:  # the service's own rules, so the API and the admin refuse alike
            raise serializers.ValidationError(str(exc)) from None
        return value


def _valid(serializer: serializers.Serializer) -> dict[str, Any]:
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


_READ_ERRORS = {
    400: OpenApiResponse(description="Invalid parameter (problem details name it)"),
    401: OpenApiResponse(description="Missing or invalid API key"),
    403: OpenApiResponse(description="The key lacks the read scope"),
    404: OpenApiResponse(description="No such golden record"),
    429: OpenApiResponse(description="Throttled (per API key)"),
}


def golden(master_id: str) -> Individual:
    individual = resolve_master_id(master_id)
    if individual is None:
        raise Http404
    return individual


def _other(master_id: str, field: str = "masterId") -> Individual:
    other = resolve_master_id(master_id)
    if other is None:
        raise ValidationError({field: ["no golden record has this master ID"]})
    return other


def _actor(request: Request) -> str:
    return str(request.user)


class _Steward(APIView):
    required_scope = "steward"


def _mine(individual: Individual) -> dict[str, Any]:
    return {"masterId": individual.master_id}


class MergeView(_Steward):
    @extend_schema(
        tags=["stewardship"],
        operation_id="individual_merge",
        summary="Merge another golden record into this one (the older master ID survives)",
        request=OtherRecordSerializer,
        responses={200: OpenApiTypes.OBJECT, **_ERRORS},
    )
    def post(self, request: Request, master_id: str) -> Response:
        individual = golden(master_id)
        other = _other(_valid(OtherRecordSerializer(data=request.data))["masterId"])
        try:
            survivor = merge_individuals(individual, other, actor=_actor(request), rule="api")
        except ResolutionError as exc:
            raise Conflict(str(exc)) from None
        retired = other if survivor.pk == individual.pk else individual
        return Response({"survivingId": survivor.master_id, "retiredId": retired.master_id})


class UnmergeView(_Steward):
    @extend_schema(
        tags=["stewardship"],
        operation_id="individual_unmerge",
        summary="Split one source record off into a golden record of its own",
        request=SourceRecordRefSerializer,
        responses={201: OpenApiTypes.OBJECT, **_ERRORS},
    )
    def post(self, request: Request, master_id: str) -> Response:
        individual = golden(master_id)
        data = _valid(SourceRecordRefSerializer(data=request.data))
        xref = CrossReference.objects.filter(
            individual=individual, system=data["externalIdType"].upper(), external_id=data["externalId"]
        ).first()
        if xref is None:
            raise ValidationError({"externalId": ["this golden record has no such source record"]})
        try:
            split = unmerge_cross_reference(xref, actor=_actor(request))
        except ResolutionError as exc:
            raise Conflict(str(exc)) from None
        return Response({"originalId": individual.master_id, "splitId": split.master_id}, status=201)


class NotAMatchView(_Steward):
    @extend_schema(
        tags=["stewardship"],
        operation_id="individual_not_a_match",
        summary="Remember that two golden records are different people",
        request=NotAMatchRequestSerializer,
        responses={201: OpenApiTypes.OBJECT, **_ERRORS},
    )
    def post(self, request: Request, master_id: str) -> Response:
        individual = golden(master_id)
        data = _valid(NotAMatchRequestSerializer(data=request.data))
        other, reason = _other(data["masterId"]), data.get("reason", "")
        try:
            mark_not_a_match(individual, other, actor=_actor(request), reason=reason)
        except ResolutionError as exc:
            raise Conflict(str(exc)) from None
        return Response({"masterId": individual.master_id, "notAMatch": other.master_id}, status=201)

    @extend_schema(
        tags=["stewardship"],
        operation_id="individual_not_a_match_clear",
        summary="Clear a not-a-match, so the rules may pair the records again",
        parameters=[OpenApiParameter("masterId", str, required=True, description="The other record's master ID")],
        responses={204: None, **_ERRORS},
    )
    def delete(self, request: Request, master_id: str) -> Response:
        individual = golden(master_id)
        other = _other(_valid(OtherRecordSerializer(data=request.query_params))["masterId"])
        if not clear_not_a_match(individual, other, actor=_actor(request)):
            raise Http404
        return Response(status=204)


class PinView(_Steward):
    @extend_schema(
        tags=["stewardship"],
        operation_id="individual_pin",
        summary="Pin a golden value: it wins over every source until unpinned",
        request=PinRequestSerializer,
        responses={200: OpenApiTypes.OBJECT, **_ERRORS},
    )
    def put(self, request: Request, master_id: str, attribute: str) -> Response:
        individual = golden(master_id)
        if attribute not in SURVIVING_FIELDS:
            raise ValidationError({"attribute": [f"must be one of {', '.join(SURVIVING_FIELDS)}"]})
        value = _valid(PinRequestSerializer(data=request.data, context={"attribute": attribute}))["value"]
        try:
            individual = pin_value(individual, attribute, value, actor=_actor(request))
        except ValueError as exc:  # ResolutionError: a merged or erased record
            raise ValidationError({"value": [str(exc)]}) from None
        return Response({"masterId": individual.master_id, "pins": individual.pins})

    @extend_schema(
        tags=["stewardship"], operation_id="individual_unpin", responses={200: OpenApiTypes.OBJECT, **_ERRORS}
    )
    def delete(self, request: Request, master_id: str, attribute: str) -> Response:
        individual = unpin_value(golden(master_id), attribute, actor=_actor(request))
        return Response({"masterId": individual.master_id, "pins": individual.pins})


class SourcesView(APIView):
    """Source records (cross references) with their payload and match decision, plus lineage and pins."""

    required_scope = "read"

    @extend_schema(
        tags=["individuals"], operation_id="individual_sources", responses={200: OpenApiTypes.OBJECT, **_READ_ERRORS}
    )
    def get(self, request: Request, master_id: str) -> Response:
        individual = golden(master_id)
        merged = list(individual.merged_records.values_list("master_id", flat=True))
        return Response(
            {
                "masterId": individual.master_id,
                "requestedId": master_id,
                "mergedIds": merged,
                "lineage": individual.lineage,
                "pins": individual.pins,
                "sourceRecords": [
                    {
                        "externalIdType": x.system,
                        "externalId": x.external_id,
                        "status": x.status,
                        "lastSeenAt": x.last_seen_at,
                        "sourceModifiedAt": x.source_modified_at,
                        "matchRule": x.match_rule,
                        "matchDecision": x.match_detail,
                        "payload": x.source_payload,
                    }
                    for x in individual.cross_references.order_by("system", "external_id")
                ],
            }
        )


class HistoryView(APIView):
    required_scope = "read"

    @extend_schema(
        tags=["individuals"], operation_id="individual_history", responses={200: OpenApiTypes.OBJECT, **_READ_ERRORS}
    )
    def get(self, request: Request, master_id: str) -> Response:
        individual = golden(master_id)
        ids = [individual.pk, *individual.merged_records.values_list("pk", flat=True)]
        entries = HistoryEntry.objects.filter(individual_id__in=ids).order_by("-created_at", "-id")[:500]
        return Response(
            {
                "masterId": individual.master_id,
                "history": [
                    {
                        "at": e.created_at,
                        "masterId": e.master_id,
                        "action": e.action,
                        "object": e.object_type,
                        "actor": e.actor,
                        "before": e.before,
                        "after": e.after,
                    }
                    for e in entries
                ],
            }
        )


class CandidatePagination(ApiCursorPagination):
    ordering = ("created_at", "id")
    page_size = 50


class CandidateListView(APIView):
    """The suspect queue, oldest first (``?status=open`` by default)."""

    required_scope = "read"

    @extend_schema(
        tags=["stewardship"],
        operation_id="match_candidate_list",
        parameters=[
            OpenApiParameter("status", str, enum=[c.value for c in CandidateStatus]),
            OpenApiParameter("cursor", str, description="Opaque cursor from the previous page's next/previous link"),
        ],
        responses={200: OpenApiTypes.OBJECT, **{k: v for k, v in _READ_ERRORS.items() if k != 404}},
    )
    def get(self, request: Request) -> Response:
        wanted = request.query_params.get("status", CandidateStatus.OPEN)
        if wanted not in CandidateStatus.values:
            raise ValidationError({"status": [f"must be one of {', '.join(CandidateStatus.values)}"]})
        queryset = MatchCandidate.objects.filter(status=wanted).select_related("left", "right")
        paginator = CandidatePagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(
            [
                {
                    "id": c.pk,
                    "left": c.left.master_id,
                    "right": c.right.master_id,
                    "rule": c.rule,
                    "score": c.score,
                    "status": c.status,
                    "comparison": c.comparison,
                    "createdAt": c.created_at,
                    "decidedBy": c.decided_by or None,
                }
                for c in page or []
            ]
        )
