"""Admin for events, sync runs with their step logs, dead letters and API keys."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from auditlog.mixins import AuditlogHistoryAdminMixin
from axes import admin as axes_admin
from axes.models import AccessAttempt
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django_q import admin as q_admin
from django_q.models import Failure, Success

from customers.admin.common import STEWARD_CSS, STEWARD_JS, short_master_id
from customers.admin.records import RECORD_PANELS
from hub.paging import CappedCountPaginator
from integrations.choices import ApiScope
from integrations.marketing_cloud.writeback import queue_flush
from integrations.models import (
    AccessToken,
    ApiClient,
    ConnectorState,
    DeadLetter,
    InboundEvent,
    SyncRun,
    SyncStep,
    validate_sendable_source,
)
from integrations.replay import replay_dead_letter
from integrations.transport import CircuitBreaker


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# A raw body longer than this is folded (a JWT or a batch), still selectable and searchable once opened.
FOLD_ABOVE = 600


def precise_time(value: dt.datetime | None) -> str:
    """A time to the millisecond in the current time zone: step logs are read for their durations."""
    if value is None:
        return "-"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return "-"
    took = (end - start).total_seconds() * 1000
    return f"{took:.1f} ms" if took < 10 else f"{took:,.0f} ms"


def data_table(data: Any) -> SafeString | str:
    """A step's JSON data as a key/value table; nested values stay compact JSON."""
    if not isinstance(data, dict):
        return "-" if data in (None, "", []) else json.dumps(data, ensure_ascii=False)
    if not data:
        return "-"
    rows = format_html_join(
        "",
        "<tr><th>{}</th><td>{}</td></tr>",
        (
            (key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
            for key, value in data.items()
        ),
    )
    return format_html('<table class="step-data">{}</table>', rows)


def raw_value(text: str) -> SafeString:
    """Long raw text wraps; beyond FOLD_ABOVE characters it is folded behind its length."""
    block = format_html('<pre class="raw-value">{}</pre>', text)
    if len(text) <= FOLD_ABOVE:
        return block
    return format_html(
        '<details class="raw-fold"><summary>{} characters: show</summary>{}</details>', f"{len(text):,}", block
    )


class AuditRowMixin(ReadOnlyMixin):
    """Audit rows (inbound events, sync runs): looked at, never added, changed or deleted here."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SyncStepInline(ReadOnlyMixin, admin.TabularInline):
    model = SyncStep
    extra = 0
    fields = ["seq", "name", "outcome", "started", "took", "detail", "step_data"]
    readonly_fields = fields
    can_delete = False
    ordering = ["seq"]
    template = "admin/integrations/readonly_tabular.html"
    verbose_name_plural = "step log"

    @admin.display(description="started")
    def started(self, obj: SyncStep) -> str:
        return precise_time(obj.started_at)

    @admin.display(description="took")
    def took(self, obj: SyncStep) -> str:
        return _duration(obj.started_at, obj.finished_at)

    @admin.display(description="data")
    def step_data(self, obj: SyncStep) -> SafeString | str:
        return data_table(obj.data)


class SyncRunInline(ReadOnlyMixin, admin.TabularInline):
    model = SyncRun
    extra = 0
    fields = ["run_link", "trigger", "status", "master_id", "started", "duration", "last_error"]
    readonly_fields = fields
    can_delete = False
    template = "admin/integrations/readonly_tabular.html"

    @admin.display(description="started")
    def started(self, obj: SyncRun) -> str:
        return precise_time(obj.started_at)

    @admin.display(description="took")
    def duration(self, obj: SyncRun) -> str:
        return _duration(obj.started_at, obj.finished_at)

    @admin.display(description="run")
    def run_link(self, obj: SyncRun) -> str:
        return format_html('<a href="../../../syncrun/{}/change/">{}</a>', obj.pk, obj)


@admin.register(InboundEvent)
class InboundEventAdmin(AuditRowMixin, admin.ModelAdmin):
    paginator = CappedCountPaginator
    list_display = ["id", "received_at", "channel", "system", "status", "golden_record", "attempts", "short_reason"]
    list_filter = ["status", "channel", "system", "received_at"]
    search_fields = ["=id", "=external_id", "=master_id", "=idempotency_key"]
    date_hierarchy = "received_at"
    readonly_fields = [
        "channel",
        "system",
        "external_id",
        "idempotency_key",
        "status",
        "reason",
        "received",
        "occurred_at",
        "processed",
        "content_type",
        "headers",
        "raw_body_text",
        "payload",
        "individual_cim",
        "api_client",
        "master_id",
        "attempts",
    ]
    exclude = ["raw_body", "received_at", "processed_at"]  # the two shown to the millisecond
    inlines = [SyncRunInline]
    show_full_result_count = False

    class Media:
        css = {"all": [*STEWARD_CSS["all"], "integrations/operations.css"]}
        js = STEWARD_JS

    @admin.display(description="master ID", ordering="master_id")
    def golden_record(self, obj: InboundEvent) -> str:
        return short_master_id(obj.master_id)

    @admin.display(description="reason")
    def short_reason(self, obj: InboundEvent) -> str:
        return (obj.reason or "")[:80]

    @admin.display(description="received at")
    def received(self, obj: InboundEvent) -> str:
        return precise_time(obj.received_at)

    @admin.display(description="processed at")
    def processed(self, obj: InboundEvent) -> str:
        return precise_time(obj.processed_at)

    @admin.display(description="raw body")
    def raw_body_text(self, obj: InboundEvent) -> SafeString:
        return raw_value(bytes(obj.raw_body or b"")[:20000].decode("utf-8", errors="replace"))


@admin.register(SyncRun)
class SyncRunAdmin(AuditRowMixin, admin.ModelAdmin):
    paginator = CappedCountPaginator
    list_display = [
        "id",
        "started_on",
        "trigger_and_event",
        "system",
        "status",
        "golden_record",
        "rule",
        "duration",
    ]
    list_filter = ["status", "trigger", "system", "started_at"]
    search_fields = ["=id", "=master_id", "=external_id", "=event__id"]
    date_hierarchy = "started_at"
    readonly_fields = [
        "event",
        "trigger",
        "status",
        "system",
        "external_id",
        "master_id",
        "match_rule",
        "started",
        "finished",
        "duration",
        "writeback_attempts",
        "next_attempt_at",
        "last_error",
        "actor",
    ]
    exclude = ["started_at", "finished_at"]  # shown to the millisecond as "started" and "finished"
    inlines = [SyncStepInline]
    list_select_related = ["event"]
    show_full_result_count = False

    class Media:
        css = {"all": [*STEWARD_CSS["all"], "integrations/operations.css"]}
        js = STEWARD_JS

    @admin.display(description="master ID", ordering="master_id")
    def golden_record(self, obj: SyncRun) -> str:
        return short_master_id(obj.master_id)

    @admin.display(description="started", ordering="started_at")
    def started_on(self, obj: SyncRun) -> str:
        # The list's column, to the minute (the run's page shows it to the millisecond).
        return format_html('<span class="nowrap">{}</span>', f"{obj.started_at:%Y-%m-%d %H:%M}")

    @admin.display(description="rule", ordering="match_rule")
    def rule(self, obj: SyncRun) -> str:
        # A short header: at 1366 px the list's columns must fit beside the side bar and filters
        # (the write-back attempts are on the run's page).
        return obj.match_rule or "-"

    @admin.display(description="took")
    def duration(self, obj: SyncRun) -> str:
        return f"{obj.duration_ms} ms" if obj.duration_ms is not None else "-"

    @admin.display(description="started at")
    def started(self, obj: SyncRun) -> str:
        return precise_time(obj.started_at)

    @admin.display(description="finished at")
    def finished(self, obj: SyncRun) -> str:
        return precise_time(obj.finished_at)

    @admin.display(description="event")
    def event_link(self, obj: SyncRun) -> str:
        if not obj.event_id:
            return "-"
        return format_html('<a href="../inboundevent/{}/change/">{}</a>', obj.event_id, obj.event_id)

    @admin.display(description="trigger", ordering="trigger")
    def trigger_and_event(self, obj: SyncRun) -> str:
        """The trigger, and the inbound event that started the run linked (one column, to fit 1366 px)."""
        if not obj.event_id:
            return obj.get_trigger_display()
        url = reverse("admin:integrations_inboundevent_change", args=[obj.event_id])
        return format_html('{} <a href="{}">#{}</a>', obj.get_trigger_display(), url, obj.event_id)


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyMixin, admin.ModelAdmin):
    paginator = CappedCountPaginator
    list_display = ["id", "created_at", "stage", "http_status", "error_code", "short_reason", "run", "replayed_at"]
    list_filter = ["stage", "http_status", ("replayed_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["=id", "=run__master_id", "=run__external_id"]
    readonly_fields = [
        "event",
        "run",
        "stage",
        "reason",
        "http_status",
        "error_code",
        "error_detail",
        "original_event",
        "created_at",
        "replayed_at",
        "replayed_by",
        "replay_run",
    ]
    actions = ["replay"]
    list_select_related = ["run"]
    show_full_result_count = False

    @admin.display(description="reason")
    def short_reason(self, obj: DeadLetter) -> str:
        return obj.reason[:100]

    @admin.action(description="Replay selected dead letters", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        replayed = skipped = 0
        for dead_letter in queryset.filter(replayed_at__isnull=True)[:500]:
            replay_dead_letter(dead_letter, actor=f"user:{request.user.get_username()}")
            replayed += 1
        skipped = queryset.count() - replayed if queryset.count() <= 500 else 0
        self.message_user(request, f"Replayed {replayed}; {skipped} already replayed.", messages.SUCCESS)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Replaying is a change; the action checks this permission.
        return request.user.has_perm("integrations.change_deadletter")


class ApiClientForm(forms.ModelForm):
    class Meta:
        model = ApiClient
        fields = ["name", "scopes", "sources", "revoked_at"]

    def clean_sources(self) -> list[str]:
        sources = [code.strip().upper() for code in self.cleaned_data.get("sources") or [] if code.strip()]
        problems = []
        for code in sources:
            try:
                validate_sendable_source(code)
            except ValidationError as exc:
                problems.extend(exc.messages)
        if problems:
            raise ValidationError(problems)
        return sorted(set(sources))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if ApiScope.INGEST in (data.get("scopes") or []) and not data.get("sources"):
            self.add_error("sources", "An ingest key needs at least one source system it may send events for.")
        return data


@admin.register(ApiClient)
class ApiClientAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    """API keys are administrators' business: others may only look (names, prefixes, scopes, sources)."""

    form = ApiClientForm
    show_auditlog_history_link = True
    list_display = ["name", "key_prefix", "scopes", "sources", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["key_prefix", "created_at", "last_used_at"]
    fields = ["name", "scopes", "sources", "key_prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are issued with `manage.py create_api_key`, which prints the key once

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked, never deleted: the events a key sent keep naming it

    def has_administer_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    @admin.action(description="Revoke selected API keys", permissions=["administer"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> None:
        count = 0
        for client in queryset.filter(revoked_at__isnull=True):
            # One save per key, so each revocation has its before/after in the change log.
            client.revoked_at = timezone.now()
            client.save(update_fields=["revoked_at"])
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(AccessToken)
class AccessTokenAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["system", "fetched_at", "expires_at", "rest_instance_url"]
    exclude = ["access_token"]


@admin.register(ConnectorState)
class ConnectorStateAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "system",
        "breaker_state",
        "consecutive_failures",
        "open_until",
        "paused_until",
        "pause_reason",
        "last_success_at",
        "last_failure_at",
        "calls",
    ]
    readonly_fields = [f.name for f in ConnectorState._meta.fields]
    actions = ["close_breaker"]

    @admin.action(description="Close the circuit breaker and lift the pause now", permissions=["change"])
    def close_breaker(self, request: HttpRequest, queryset: QuerySet[ConnectorState]) -> None:
        systems = list(queryset.values_list("system", flat=True))
        with transaction.atomic():  # the breakers close and the flush is queued together
            for system in systems:
                CircuitBreaker(system).close()
            queue_flush()
        self.message_user(request, f"Closed {len(systems)} breaker(s); pending write-backs resume.", messages.SUCCESS)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("integrations.change_connectorstate")


def _sync_runs_panel(individual: Any) -> SafeString:
    """The sync runs that touched a golden record (its master ID or one merged into it), newest first."""
    ids = [individual.master_id, *individual.merged_records.values_list("master_id", flat=True)]
    runs = SyncRun.objects.filter(master_id__in=ids).order_by("-id")[:20]
    rows = format_html_join(
        "",
        "<tr><td><a href='{}'>#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                reverse("admin:integrations_syncrun_change", args=[run.pk]),
                run.pk,
                run.started_at.strftime("%Y-%m-%d %H:%M"),  # the admin's one format (hub/formats)
                run.get_trigger_display(),
                run.system,
                run.get_status_display(),
                run.match_rule,
            )
            for run in runs
        ),
    )
    if not rows:
        return format_html("<p>{}</p>", "No sync run has touched this record yet.")
    head = "<tr><th>run</th><th>started</th><th>trigger</th><th>system</th><th>status</th><th>match rule</th></tr>"
    return format_html('<table class="sync-runs">{}{}</table>', mark_safe(head), rows)  # noqa: S308


RECORD_PANELS.append(("Sync runs that touched this record (their step logs are one click away)", _sync_runs_panel))


# Third-party admins whose actions declare no permission (so are offered to anyone who may view
# the list; the hub's admin site refuses that): the same actions, with their permission declared.
@admin.action(description="Resubmit selected tasks to the queue", permissions=["change"])
def resubmit_selected_tasks(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    q_admin.resubmit_task(model_admin, request, queryset)


class SuccessfulTaskAdmin(q_admin.TaskAdmin):
    actions = [resubmit_selected_tasks]


class FailedTaskAdmin(q_admin.FailAdmin):
    actions = [resubmit_selected_tasks]


class LoginAttemptAdmin(axes_admin.AccessAttemptAdmin):
    @admin.action(description="Clean up expired attempts", permissions=["delete"])
    def cleanup_expired_attempts(self, request: HttpRequest, queryset: QuerySet) -> None:
        # django-axes 8.3.1 reads the attempt time its login handling sets, which an admin page's
        # request lacks (AttributeError, a 500); unset, it counts the cool-off back from now.
        if not hasattr(request, "axes_attempt_time"):
            request.axes_attempt_time = None
        super().cleanup_expired_attempts(request, queryset)


for _model, _admin_class in (
    (Success, SuccessfulTaskAdmin),
    (Failure, FailedTaskAdmin),
    (AccessAttempt, LoginAttemptAdmin),
):
    admin.site.unregister(_model)
    admin.site.register(_model, _admin_class)
