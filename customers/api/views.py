"""Read API for golden records, rendered as CIM Individuals."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from customers.choices import ContactPointKind
from customers.cim import render_individual
from customers.models import Individual
from customers.normalize import normalize_email
from customers.stewardship import erase_individual
from hub.paging import ApiPagination


class CimIndividualSerializer(serializers.BaseSerializer):
    def to_representation(self, instance: Individual) -> dict[str, Any]:
        return render_individual(instance)


def _individuals() -> QuerySet[Individual]:
    return Individual.objects.prefetch_related("contact_points", "cross_references", "subscription_consents")


_ERRORS = {
    401: OpenApiResponse(description="Missing or invalid API key"),
    403: OpenApiResponse(description="The key lacks the scope"),
    429: OpenApiResponse(description="Throttled (per API key)"),
}


@extend_schema_view(
    get=extend_schema(
        tags=["individuals"],
        operation_id="individual_retrieve",
        responses={200: OpenApiTypes.OBJECT, 404: OpenApiResponse(description="No such golden record"), **_ERRORS},
    )
)
class IndividualDetailView(generics.RetrieveAPIView):
    """``GET /api/v1/individuals/{masterId}``: the golden record as a CIM Individual."""

    required_scope = "read"
    serializer_class = CimIndividualSerializer
    lookup_field = "master_id"
    lookup_url_kwarg = "master_id"

    def get_queryset(self) -> QuerySet[Individual]:
        return _individuals()

    def get_object(self) -> Individual:
        # A merged (retired) master ID reads as its survivor, forever.
        individual = super().get_object()
        if individual.merged_into_id is not None:
            individual = _individuals().get(pk=individual.merged_into_id)
        return individual


@extend_schema_view(
    get=extend_schema(
        tags=["individuals"],
        operation_id="individual_list",
        parameters=[
            OpenApiParameter("externalIdType", str, description="Source system, e.g. MARKETING_CLOUD"),
            OpenApiParameter("externalId", str, description="The record's ID in that system"),
            OpenApiParameter("email", str, description="Email address (matched normalised)"),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": ApiPagination.max_limit},
                description=f"Results per page (default {ApiPagination.default_limit}, at most "
                f"{ApiPagination.max_limit}: a larger limit gets {ApiPagination.max_limit})",
            ),
            OpenApiParameter("offset", {"type": "integer", "minimum": 0}, description="Results to skip"),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="Invalid filter"), **_ERRORS},
    )
)
class IndividualListView(generics.ListAPIView):
    """``GET /api/v1/individuals?externalIdType=&externalId=`` or ``?email=``"""

    required_scope = "read"
    serializer_class = CimIndividualSerializer

    def get_queryset(self) -> QuerySet[Individual]:
        params = self.request.query_params
        queryset = _individuals().filter(merged_into__isnull=True).order_by("id")
        # Empty parameters count as absent; no filter lists every golden record, a page at a time.
        id_type, external_id, email = params.get("externalIdType"), params.get("externalId"), params.get("email")
        link: dict[str, str] = {}
        if id_type:
            link["cross_references__system"] = id_type.upper()
        if external_id:
            link["cross_references__external_id"] = external_id
        if link:  # one filter() call: both conditions hold for the same cross reference
            queryset = queryset.filter(**link).distinct()
        if email:
            try:
                key = normalize_email(email)
            except ValueError:
                raise ValidationError({"email": ["is not a valid email address"]}) from None
            queryset = queryset.filter(
                contact_points__kind=ContactPointKind.EMAIL, contact_points__value_key=key
            ).distinct()
        return queryset


@extend_schema_view(
    post=extend_schema(
        tags=["individuals"],
        operation_id="individual_erase",
        request=None,
        summary="Erase a person's personal data (GDPR); the erasure itself is recorded",
        responses={
            202: inline_serializer(
                "ErasureAccepted",
                {
                    "masterId": serializers.CharField(),
                    "erasedAt": serializers.DateTimeField(),
                    "sourceRecords": serializers.IntegerField(),
                },
            ),
            404: OpenApiResponse(description="No such golden record"),
            **_ERRORS,
        },
    )
)
class IndividualErasureView(generics.GenericAPIView):
    """``POST /api/v1/individuals/{masterId}/erasure``"""

    required_scope = "erase"
    lookup_field = "master_id"
    lookup_url_kwarg = "master_id"
    queryset = Individual.objects.all()

    def post(self, request: Request, master_id: str) -> Response:
        individual = self.get_object()
        with transaction.atomic():
            pairs = erase_individual(individual, actor=str(request.user))
        individual.refresh_from_db()
        return Response(
            {"masterId": individual.master_id, "erasedAt": individual.erased_at, "sourceRecords": len(pairs)},
            status=202,
        )
