"""The generic CIM intake (B2C Commerce, Salesforce core, point of sale) and sync-run reads."""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.cim import CimValidationError, parse_cim_datetime, parse_individual
from customers.cim_schema import COMPONENT_REF as INDIVIDUAL_REF
from customers.cim_schema import INDIVIDUAL_EXAMPLE
from hub import strict_json
from hub.api.bodies import read_body_or_problem
from hub.api.problems import problem
from hub.problems import PROBLEM_CONTENT_TYPE
from integrations.choices import RESERVED_SOURCES, SYSTEM_CODE, EventChannel
from integrations.intake import AcceptedEvent, json_safe, request_headers, store_events, store_rejected
from integrations.marketing_cloud.client import breaker as marketing_cloud_breaker
from integrations.models import SyncRun
from integrations.queue import cluster_stalled, queue_depth

MAX_BATCH = 1000
QUEUE_STALL_SECONDS = 120


class CimDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time as CIM dates are checked: 1900-2100, offsets within ±14 h."""

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parse_cim_datetime(value, self.field_name)
            except CimValidationError as exc:
                raise serializers.ValidationError(exc.message) from None
        return super().to_internal_value(value)


@extend_schema_field(INDIVIDUAL_REF)
class CimIndividualField(serializers.JSONField):
    """``individual``: checked by ``customers.cim.parse_individual``; described by ``customers.cim_schema``."""


class CimEventSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=150, help_text="The sender's own event ID (deduplication key).")
    source = serializers.RegexField(SYSTEM_CODE, help_text="System code, e.g. B2C_COMMERCE, SALESFORCE, POS.")
    occurredAt = CimDateTimeField(
        help_text="When the change happened in the source (ISO 8601, years 1900-2100, offset within ±14:00)."
    )
    individual = CimIndividualField(
        help_text="A CIM Individual; its id (or an externalId of the source's type) is the source record's ID."
    )

    def validate_occurredAt(self, value: dt.datetime) -> dt.datetime:  # noqa: N802  (the API's field name)
        # The newest change wins survivorship: a date ahead of the clock would win it until that date.
        skew = settings.EVENT_CLOCK_SKEW_SECONDS
        if value > timezone.now() + dt.timedelta(seconds=skew):
            raise serializers.ValidationError(f"is in the future (more than {skew} s ahead of the hub's clock)")
        return value


class CimBatchSerializer(serializers.Serializer):
    events = serializers.ListField(child=CimEventSerializer(), min_length=1, max_length=1000)


class EventsView(APIView):
    """``POST /api/v1/events``: a batch of up to 1,000 CIM Individual events, all or nothing."""

    parser_classes = [strict_json.StrictJSONParser]  # the view reads the raw body; JSON is the only format
    required_scope = "ingest"

    @extend_schema(
        summary="Ingest CIM Individual events",
        request=CimBatchSerializer,
        examples=[
            OpenApiExample(
                "One point-of-sale customer",
                request_only=True,
                value={
                    "events": [
                        {
                            "id": "pos-evt-000123",
                            "source": "POS",
                            "occurredAt": "2026-11-30T14:05:00Z",
                            "individual": INDIVIDUAL_EXAMPLE,
                        }
                    ]
                },
            )
        ],
        responses={
            200: inline_serializer(
                "BatchAccepted",
                {
                    "status": serializers.CharField(),
                    "accepted": serializers.IntegerField(),
                    "duplicates": serializers.IntegerField(),
                    "events": inline_serializer(
                        "BatchEventResult",
                        {
                            "id": serializers.CharField(),
                            "eventId": serializers.IntegerField(),
                            "duplicate": serializers.BooleanField(),
                        },
                        many=True,
                    ),
                },
            ),
            400: OpenApiResponse(description="Invalid batch; errors name the event index and field"),
            401: OpenApiResponse(description="Missing or invalid API key"),
            403: OpenApiResponse(
                description="The key lacks the ingest scope, or an event names a source the key is not bound to "
                "(or a reserved one: STEWARD, MARKETING_CLOUD, MDM, GLOBAL); errors name events[i].source"
            ),
            413: OpenApiResponse(description="Body too large"),
            415: OpenApiResponse(description="Content-Type is not application/json"),
            429: OpenApiResponse(description="Throttled (per API key)"),
        },
        tags=["events"],
    )
    def post(self, request: Request) -> Response:
        body, too_large = read_body_or_problem(request._request, settings.MAX_BODY_BYTES, "A batch")
        if too_large:
            return too_large
        headers = request_headers(request.META)
        client = request.user.client
        content_type = (request.content_type or "").split(";")[0].strip().lower()

        def reject(
            errors: list[dict[str, Any]], payload: Any = None, code: int = status.HTTP_400_BAD_REQUEST
        ) -> Response:
            event = store_rejected(
                channel=EventChannel.API,
                raw_body=body,
                headers=headers,
                content_type=content_type,
                reason="; ".join(f"{e['field']}: {e['message']}" for e in errors[:20]),
                payload=payload if isinstance(payload, dict | list) else None,
                api_client=client,
            )
            title = "Invalid batch" if code == status.HTTP_400_BAD_REQUEST else "Source not allowed for this key"
            return problem(code, title, errors=errors, eventId=event.pk)

        if content_type != "application/json":
            return problem(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Unsupported media type", "Send Content-Type: application/json."
            )
        try:
            data = strict_json.loads(body)
        except strict_json.StrictJsonError as exc:
            return reject([{"field": exc.field, "message": exc.message}])
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            return reject([{"field": "events", "message": "must be a list of events"}], data)
        if not data["events"]:
            return reject([{"field": "events", "message": "must not be empty"}], data)
        if len(data["events"]) > MAX_BATCH:
            return reject([{"field": "events", "message": f"at most {MAX_BATCH} events per batch"}], data)

        serializer = CimBatchSerializer(data=data)
        if not serializer.is_valid():
            errors: list[dict[str, Any]] = []
            event_errors = serializer.errors.get("events", [])
            # DRF 3.18 reports a list serializer's errors as {index: errors}; older ones as a list.
            indexed = event_errors.items() if isinstance(event_errors, dict) else enumerate(event_errors)
            for index, item_errors in indexed:
                if not isinstance(item_errors, dict):
                    errors.append({"field": "events", "message": str(item_errors)})
                    continue
                for field, messages in item_errors.items():
                    for message in messages if isinstance(messages, list) else [messages]:
                        errors.append({"field": f"events[{index}].{field}", "message": str(message)})
            return reject(errors or [{"field": "events", "message": "invalid"}], data)

        refused = [
            {"field": f"events[{index}].source", "message": _source_refusal(item["source"])}
            for index, item in enumerate(serializer.validated_data["events"])
            if not client.may_send(item["source"])
        ]
        if refused:
            return reject(refused, data, code=status.HTTP_403_FORBIDDEN)

        accepted: list[AcceptedEvent] = []
        errors = []
        for index, item in enumerate(serializer.validated_data["events"]):
            path = f"events[{index}].individual"
            # Parse what is stored, as the resolver will read it back from jsonb: NUL kept as
            # U+FFFD (json_safe). Numbers jsonb would give back in another form (1e101 as a
            # 102-digit integer) customers.cim refuses wherever it reads a value.
            individual = json_safe(item["individual"])
            try:
                source = parse_individual(individual, path)
                external_id = source.system_id or source.external_id_for(item["source"])
                if not external_id:
                    raise CimValidationError(
                        f"{path}.id",
                        f"the {item['source']} record ID is required (id, or an externalId of type {item['source']})",
                    )
            except CimValidationError as exc:
                errors.append({"field": exc.field, "message": exc.message})
                continue
            accepted.append(
                AcceptedEvent(
                    channel=EventChannel.API,
                    system=item["source"],
                    external_id=external_id,
                    idempotency_key=f"api:{item['source']}:{item['id']}",
                    raw_body=json.dumps(data["events"][index], separators=(",", ":")).encode(),
                    headers=headers,
                    content_type=content_type,
                    payload={"id": item["id"], "source": item["source"], "batchSize": len(data["events"])},
                    individual_cim=individual,
                    occurred_at=item["occurredAt"],
                    api_client=client,
                )
            )
        if errors:
            return reject(errors, data)
        results = store_events(accepted)
        duplicates = sum(1 for _, dup in results if dup)
        return Response(
            {
                "status": "accepted",
                "accepted": len(results) - duplicates,
                "duplicates": duplicates,
                "events": [
                    {"id": item["id"], "eventId": ev.pk, "duplicate": dup}
                    for item, (ev, dup) in zip(serializer.validated_data["events"], results, strict=True)
                ],
            }
        )


def _source_refusal(source: str) -> str:
    if source in RESERVED_SOURCES:
        return f"{source} is reserved: it reaches the hub only through its own authenticated channel"
    return f"this API key is not bound to source {source} (an administrator binds keys to their sources)"


class SyncStepSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    name = serializers.CharField()
    startedAt = serializers.DateTimeField(source="started_at")
    finishedAt = serializers.DateTimeField(source="finished_at")
    outcome = serializers.CharField()
    detail = serializers.CharField()
    data = serializers.JSONField()


class SyncRunSerializer(serializers.ModelSerializer):
    eventId = serializers.IntegerField(source="event_id", allow_null=True)
    masterId = serializers.CharField(source="master_id")
    externalId = serializers.CharField(source="external_id")
    matchRule = serializers.CharField(source="match_rule")
    startedAt = serializers.DateTimeField(source="started_at")
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)
    nextAttemptAt = serializers.DateTimeField(source="next_attempt_at", allow_null=True)
    writebackAttempts = serializers.IntegerField(source="writeback_attempts")
    lastError = serializers.CharField(source="last_error")
    steps = SyncStepSerializer(many=True)

    class Meta:
        model = SyncRun
        fields = [
            "id",
            "eventId",
            "trigger",
            "status",
            "system",
            "externalId",
            "masterId",
            "matchRule",
            "startedAt",
            "finishedAt",
            "nextAttemptAt",
            "writebackAttempts",
            "lastError",
            "steps",
        ]


class SyncRunDetailView(generics.RetrieveAPIView):
    """``GET /api/v1/sync-runs/{id}``"""

    required_scope = "read"
    serializer_class = SyncRunSerializer
    queryset = SyncRun.objects.prefetch_related("steps")

    @extend_schema(
        summary="A sync run with its ordered step log",
        tags=["sync"],
        responses={
            200: SyncRunSerializer,
            401: OpenApiResponse(description="Missing or invalid API key"),
            403: OpenApiResponse(description="The key lacks the read scope"),
            404: OpenApiResponse(description="No such sync run"),
            429: OpenApiResponse(description="Throttled"),
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


def _unhealthy(report: dict[str, Any], errors: list[dict[str, str]]) -> Response:
    """A 503 as every refusal is: problem+json naming what failed, with the health report's keys.

    The report's own ``status`` (``unavailable``, ``degraded``) is ``health`` here, since a
    problem's ``status`` is the HTTP status.
    """
    details = {("health" if key == "status" else key): value for key, value in report.items()}
    return problem(status.HTTP_503_SERVICE_UNAVAILABLE, "Service unavailable", errors=errors, **details)


class HealthView(APIView):
    """``GET /api/health``: the database and the queue (no authentication)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Health of the database and the task queue",
        responses={
            200: inline_serializer(
                "Health",
                {
                    "status": serializers.CharField(),
                    "database": serializers.CharField(),
                    "queue": serializers.JSONField(),
                    "connectors": serializers.JSONField(),
                },
            ),
            503: OpenApiResponse(
                description="A dependency is down: a problem whose errors name it (database, queue), with the "
                "report's keys (health: unavailable or degraded, database, queue, connectors)"
            ),
        },
        tags=["health"],
    )
    def get(self, request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok", "database": "ok", "queue": {}}
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            depth, oldest = queue_depth()
        except DatabaseError:
            body.update(status="unavailable", database="unreachable")
            return _unhealthy(body, [{"field": "database", "message": "unreachable"}])
        body["connectors"] = [marketing_cloud_breaker.describe()]
        stalled = cluster_stalled(QUEUE_STALL_SECONDS)
        body["queue"] = {"status": "stalled" if stalled else "ok", "depth": depth, "oldestReadySeconds": oldest}
        if stalled:
            # Ready tasks nobody picked up: no qcluster is running, or it is wedged.
            body["status"] = "degraded"
            message = f"ready work has waited more than {QUEUE_STALL_SECONDS} s with no cluster taking it"
            return _unhealthy(body, [{"field": "queue", "message": message}])
        return Response(body)


class LiveView(APIView):
    """``GET /api/health/live``: the process answers. Touches nothing else, the database included.

    What a supervisor restarts the web process on: a database outage is no reason to restart it.
    """

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Liveness: the web process answers (no dependency is checked)",
        responses={200: inline_serializer("Live", {"status": serializers.CharField()})},
        tags=["health"],
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


@functools.cache
def _known_migrations() -> frozenset[tuple[str, str]]:
    """Every migration this code has (read from disk once: the files do not change under a running process)."""
    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)


def unapplied_migrations() -> list[str]:
    """``app.name`` of each migration in the code that the database has not applied (one small query)."""
    applied = set(MigrationRecorder(connection).applied_migrations())
    return sorted(f"{app}.{name}" for app, name in _known_migrations() - applied)


class ReadyView(APIView):
    """``GET /api/health/ready``: take traffic? The database answers, its schema is this code's, the queue moves."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Readiness: database reachable, every migration applied, the queue not stalled",
        responses={
            200: inline_serializer(
                "Ready",
                {"status": serializers.CharField(), "checks": serializers.DictField(child=serializers.CharField())},
            ),
            503: OpenApiResponse(
                description="Not ready: a problem+json body whose errors name each failed check "
                "(database, migrations, queue) and whose checks give every check's result"
            ),
        },
        tags=["health"],
    )
    def get(self, request: Request) -> Response:
        checks: dict[str, str] = {}
        errors: list[dict[str, str]] = []
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            checks["database"] = "ok"
            missing = unapplied_migrations()
            checks["migrations"] = "ok" if not missing else f"{len(missing)} unapplied"
            if missing:
                shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
                errors.append({"field": "migrations", "message": f"not applied: {shown} (run manage.py migrate)"})
            stalled = cluster_stalled(QUEUE_STALL_SECONDS)
            checks["queue"] = "stalled" if stalled else "ok"
            if stalled:
                errors.append(
                    {
                        "field": "queue",
                        "message": f"work is ready but no task finished for {QUEUE_STALL_SECONDS} s "
                        "(no qcluster running, or it is wedged)",
                    }
                )
        except DatabaseError as exc:
            checks["database"] = "unreachable"
            errors.append({"field": "database", "message": f"unreachable: {type(exc).__name__}"})
        if errors:
            response = problem(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "Not ready",
                "; ".join(error["field"] for error in errors),
                errors=errors,
                checks=checks,
            )
            response.content_type = PROBLEM_CONTENT_TYPE
            return response
        return Response({"status": "ok", "checks": checks})
