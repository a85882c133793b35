"""Admin for ENS callbacks and notifications, the reconciliation poller, imports and bulk write-backs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpRequest
from django_q.models import Schedule

from integrations.marketing_cloud.models import (
    BulkWriteback,
    EnsCallback,
    EnsNotification,
    ImportJob,
    ReconciliationState,
)
from integrations.marketing_cloud.poller import SCHEDULE_NAME, queue_poll


@admin.register(EnsCallback)
class EnsCallbackAdmin(admin.ModelAdmin):
    list_display = ["callback_id", "name", "url", "handshake_at", "verified_at", "event_types", "created_at"]
    # The signature and verification keys never leave the database.
    exclude = ["signature_key", "verification_key"]
    readonly_fields = [
        "callback_id",
        "name",
        "url",
        "handshake_at",
        "verified_at",
        "subscription_id",
        "event_types",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created by `manage.py mc_ens_register`


@admin.register(EnsNotification)
class EnsNotificationAdmin(admin.ModelAdmin):
    list_display = ["id", "received_at", "event_type", "status", "subscriber_id", "master_id", "occurred_at"]
    list_filter = ["event_type", "status", "received_at"]
    search_fields = ["=composite_id", "=subscriber_id", "=master_id"]
    readonly_fields = [f.name for f in EnsNotification._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # Counts per event type and status: what ENS sends that we do not act on is visible, not dropped.
        counts = (
            EnsNotification.objects.values("event_type", "status")
            .annotate(n=Count("id"))
            .order_by("event_type", "status")
        )
        extra_context = {**(extra_context or {}), "ens_counts": list(counts)}
        return super().changelist_view(request, extra_context)


@admin.register(ReconciliationState)
class ReconciliationStateAdmin(admin.ModelAdmin):
    list_display = [
        "de_key",
        "watermark",
        "last_status",
        "last_started_at",
        "last_finished_at",
        "last_rows_read",
        "last_pages_read",
        "last_events_sent",
        "last_rows_rejected",
        "next_scheduled_run",
    ]
    fields = [
        "de_key",
        "watermark",
        "overlap_seconds",
        "page_size",
        "last_status",
        "last_started_at",
        "last_finished_at",
        "last_rows_read",
        "last_pages_read",
        "last_events_sent",
        "last_rows_rejected",
        "last_error",
    ]
    readonly_fields = [
        "de_key",
        "last_status",
        "last_started_at",
        "last_finished_at",
        "last_rows_read",
        "last_pages_read",
        "last_events_sent",
        "last_rows_rejected",
        "last_error",
    ]
    actions = ["run_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="next scheduled run")
    def next_scheduled_run(self, obj: ReconciliationState) -> Any:
        return Schedule.objects.filter(name=SCHEDULE_NAME).values_list("next_run", flat=True).first()

    @admin.action(description="Run the reconciliation now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: Any) -> None:
        queue_poll()
        self.message_user(request, "Reconciliation queued; refresh to see its result.", messages.SUCCESS)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # Show the row before the first run, so "Run now" has something to act on.
        ReconciliationState.objects.get_or_create(de_key=settings.MC_DE_KEY)
        return super().changelist_view(request, extra_context)


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "file_name",
        "status",
        "rows_done",
        "created",
        "matched",
        "superseded",
        "rejected",
        "writebacks_queued",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status"]
    readonly_fields = [f.name for f in ImportJob._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # imports run with `manage.py import_subscribers FILE.csv`


@admin.register(BulkWriteback)
class BulkWritebackAdmin(admin.ModelAdmin):
    """Read-only: the flush and its poll write these; a steward sees where each bulk request stands.

    Large-table-safe: no full count, filters on indexed or small columns, and the row arrays
    (thousands of IDs each) are never loaded for the list, only their size.
    """

    list_display = [
        "id",
        "state",
        "request_id",
        "rows",
        "rows_written",
        "rows_failed",
        "rows_retried",
        "rows_superseded",
        "claimed_at",
        "submitted_at",
        "last_polled_at",
        "polls",
        "next_poll_at",
        "completed_at",
        "request_status",
        "result_status",
    ]
    list_filter = ["state"]
    search_fields = ["=request_id"]
    show_full_result_count = False
    list_per_page = 50
    fields = [
        "state",
        "request_id",
        "de_key",
        "rows",
        "rows_written",
        "rows_failed",
        "rows_retried",
        "rows_superseded",
        "claimed_at",
        "submitted_at",
        "last_polled_at",
        "polls",
        "next_poll_at",
        "completed_at",
        "request_status",
        "result_status",
        "last_error",
        "first_cross_references",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).defer("xref_ids", "master_ids", "last_error")

    @admin.display(description="cross references (first 20; their write-back state is on each)")
    def first_cross_references(self, obj: BulkWriteback) -> str:
        ids = BulkWriteback.objects.filter(pk=obj.pk).values_list("xref_ids", flat=True).first() or []
        more = f" and {len(ids) - 20:,} more" if len(ids) > 20 else ""
        return ", ".join(str(i) for i in ids[:20]) + more

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
