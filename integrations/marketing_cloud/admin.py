"""Admin for Marketing Cloud's side of the hub.

ENS callbacks and notifications, the reconciliation and status reads, imports, bulk write-backs,
unsubscribes sent and contact deletions.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django_q.models import Schedule

from customers.admin.history import format_moment
from customers.admin.records import RECORD_PANELS
from customers.models import Individual
from integrations.marketing_cloud import business_units
from integrations.marketing_cloud.erasure import retry as retry_deletions
from integrations.marketing_cloud.models import (
    BulkWriteback,
    ContactDeletion,
    EnsCallback,
    EnsNotification,
    ImportJob,
    ReconciliationState,
    SubscriberStatusSync,
    UnsubscribeWriteback,
)
from integrations.marketing_cloud.poller import SCHEDULE_NAME, queue_poll
from integrations.marketing_cloud.status_sync import STATUS_SCHEDULE_NAME, queue_status_read
from integrations.marketing_cloud.unsubscribe import retry as retry_unsubscribes


class ScheduledReadAdmin(admin.ModelAdmin):
    """A read of Marketing Cloud that runs on a schedule: its state rows, the next run, "run now"."""

    actions = ["run_now"]
    schedule_name = ""
    run_now_description = ""
    queued_message = ""

    @staticmethod
    def queue_run() -> None:
        raise NotImplementedError

    @staticmethod
    def state_for(unit: business_units.BusinessUnit) -> None:
        """Make sure ``unit`` has its state row."""
        raise NotImplementedError

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # One row per business unit before its first run, so each unit's state (and "Run now") shows
        # from the start.
        for unit in business_units.units():
            self.state_for(unit)
        return super().changelist_view(request, extra_context)

    @admin.display(description="business unit", ordering="business_unit")
    def unit(self, obj: Any) -> str:
        """The unit's name and MID; a MID no unit has any more says so (its row is kept, not read)."""
        if not obj.business_unit:
            return business_units.default_unit().label
        found = business_units.unit_for_mid(obj.business_unit)
        return found.label if found is not None else f"MID {obj.business_unit} (not configured)"

    @admin.display(description="next scheduled run")
    def next_scheduled_run(self, obj: Any) -> Any:
        return Schedule.objects.filter(name=self.schedule_name).values_list("next_run", flat=True).first()

    @admin.action(description="Run now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: Any) -> None:
        self.queue_run()
        self.message_user(request, self.queued_message, messages.SUCCESS)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if "run_now" in actions:
            func, name, _ = actions["run_now"]
            actions["run_now"] = (func, name, self.run_now_description)
        return actions


@admin.register(EnsCallback)
class EnsCallbackAdmin(admin.ModelAdmin):
    list_display = ["callback_id", "name", "unit", "url", "handshake_at", "verified_at", "event_types", "created_at"]
    list_filter = ["business_unit"]
    # The signature and verification keys never leave the database.
    exclude = ["signature_key", "verification_key"]
    readonly_fields = [
        "callback_id",
        "name",
        "unit",
        "url",
        "handshake_at",
        "verified_at",
        "subscription_id",
        "event_types",
        "created_at",
    ]

    unit = ScheduledReadAdmin.unit

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created by `manage.py mc_ens_register`


@admin.register(EnsNotification)
class EnsNotificationAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "received_at",
        "event_type",
        "status",
        "business_unit",
        "subscriber_id",
        "master_id",
        "occurred_at",
    ]
    list_filter = ["event_type", "status", "business_unit", "received_at"]
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
class ReconciliationStateAdmin(ScheduledReadAdmin):
    list_display = [
        "de_key",
        "unit",
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
        "unit",
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
        "unit",
        "last_status",
        "last_started_at",
        "last_finished_at",
        "last_rows_read",
        "last_pages_read",
        "last_events_sent",
        "last_rows_rejected",
        "last_error",
    ]
    list_filter = ["business_unit"]
    schedule_name = SCHEDULE_NAME
    run_now_description = "Run the reconciliation now"
    queued_message = "Reconciliation queued; refresh to see its result."

    @staticmethod
    def queue_run() -> None:
        queue_poll()

    @staticmethod
    def state_for(unit: business_units.BusinessUnit) -> None:
        ReconciliationState.objects.get_or_create(business_unit=unit.state_key, de_key=unit.de_key)


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
        "business_unit",
        "de_key",
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
    list_filter = ["state", "business_unit"]
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


@admin.register(SubscriberStatusSync)
class SubscriberStatusSyncAdmin(ScheduledReadAdmin):
    list_display = [
        "name",
        "unit",
        "watermark",
        "last_status",
        "last_finished_at",
        "last_read",
        "last_pages",
        "last_applied",
        "last_unchanged",
        "last_unknown",
        "next_scheduled_run",
    ]
    fields = [
        "name",
        "unit",
        "watermark",
        "overlap_seconds",
        "last_status",
        "last_started_at",
        "last_finished_at",
        "last_read",
        "last_pages",
        "last_applied",
        "last_unchanged",
        "last_unknown",
        "last_error",
    ]
    readonly_fields = [f for f in fields if f not in ("watermark", "overlap_seconds")]
    list_filter = ["business_unit"]
    schedule_name = STATUS_SCHEDULE_NAME
    run_now_description = "Read subscriber statuses now"
    queued_message = "Status read queued; refresh to see its result."

    @staticmethod
    def queue_run() -> None:
        queue_status_read()

    @staticmethod
    def state_for(unit: business_units.BusinessUnit) -> None:
        SubscriberStatusSync.objects.get_or_create(business_unit=unit.state_key)


@admin.register(UnsubscribeWriteback)
class UnsubscribeWritebackAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "subscriber_key",
        "golden_record",
        "business_unit",
        "state",
        "attempts",
        "due_at",
        "consent_source",
        "opted_out_since",
        "written_at",
        "short_error",
    ]
    list_filter = ["state", "consent_source", "cross_reference__business_unit"]
    list_select_related = ["cross_reference__individual"]
    search_fields = ["=cross_reference__external_id", "=cross_reference__individual__master_id"]
    readonly_fields = [f.name for f in UnsubscribeWriteback._meta.fields]
    actions = ["retry_now"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # opt-outs recorded on golden records create them

    @admin.display(description="subscriber key", ordering="cross_reference__external_id")
    @admin.display(description="business unit", ordering="cross_reference__business_unit")
    def business_unit(self, obj: UnsubscribeWriteback) -> str:
        return obj.cross_reference.business_unit or "default"

    def subscriber_key(self, obj: UnsubscribeWriteback) -> str:
        return obj.cross_reference.external_id

    @admin.display(description="golden record")
    def golden_record(self, obj: UnsubscribeWriteback) -> str:
        individual = obj.cross_reference.individual
        url = reverse("admin:customers_individual_change", args=[individual.pk])
        return format_html('<a href="{}">{}</a>', url, individual.master_id)

    @admin.display(description="last error")
    def short_error(self, obj: UnsubscribeWriteback) -> str:
        return (obj.last_error[:120] + ("..." if len(obj.last_error) > 120 else "")) if obj.last_error else ""

    @admin.action(description="Retry selected unsubscribes now", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: Any) -> None:
        count = retry_unsubscribes(queryset)
        self.message_user(request, f"{count} unsubscribe(s) queued again.", messages.SUCCESS)


@admin.register(ContactDeletion)
class ContactDeletionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "golden_record",
        "state",
        "business_unit",
        "operation_id",
        "operation_status",
        "attempts",
        "requested_at",
        "accepted_at",
        "completed_at",
        "last_error",
    ]
    list_filter = ["state", "business_unit", "operation_status"]
    list_select_related = ["individual"]
    search_fields = ["=individual__master_id", "=operation_id"]
    # The contact key (often an email address) is not shown: the person is erased.
    exclude = ["contact_key"]
    readonly_fields = [f.name for f in ContactDeletion._meta.fields if f.name != "contact_key"]
    actions = ["retry_now"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # erasures create them (MC_ERASE_CONTACTS)

    @admin.display(description="golden record")
    def golden_record(self, obj: ContactDeletion) -> str:
        url = reverse("admin:customers_individual_change", args=[obj.individual_id])
        return format_html('<a href="{}">{}</a>', url, obj.individual.master_id)

    @admin.action(description="Retry selected failed deletions now", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: Any) -> None:
        count = retry_deletions(queryset)
        self.message_user(request, f"{count} deletion(s) queued again.", messages.SUCCESS)


def _marketing_cloud_panel(individual: Individual) -> SafeString:
    """The record's unsubscribes told to Marketing Cloud and, once erased, its contact deletions."""
    unsubscribes = list(
        UnsubscribeWriteback.objects.filter(cross_reference__individual=individual)
        .select_related("cross_reference")
        .order_by("id")
    )
    # Only an erasure makes contact deletions: an active record's page spends no query on them.
    deletions = (
        list(ContactDeletion.objects.filter(individual=individual).order_by("id")) if individual.erased_at else []
    )
    if not unsubscribes and not deletions:
        return format_html("<p>{}</p>", "Nothing told to Marketing Cloud beyond the master ID.")
    parts = []
    if unsubscribes:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    u.cross_reference.external_id if individual.erased_at is None else "(erased)",
                    u.get_state_display(),
                    u.attempts,
                    format_moment(u.written_at) if u.written_at else "",
                    u.last_error[:200],
                )
                for u in unsubscribes
            ),
        )
        head = "<tr><th>unsubscribe of</th><th>state</th><th>attempts</th><th>written</th><th>last error</th></tr>"
        parts.append(format_html('<table class="mc-unsubscribes">{}{}</table>', mark_safe(head), rows))  # noqa: S308
    if deletions:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    d.get_state_display(),
                    d.operation_id if d.operation_id is not None else "",
                    d.operation_status,
                    d.attempts,
                    d.last_error[:200],
                )
                for d in deletions
            ),
        )
        head = (
            "<tr><th>contact deletion</th><th>operation ID</th><th>operation status</th>"
            "<th>attempts</th><th>last error</th></tr>"
        )
        parts.append(format_html('<table class="mc-contact-deletions">{}{}</table>', mark_safe(head), rows))  # noqa: S308
    return format_html_join("", "{}", ((p,) for p in parts))


RECORD_PANELS.append(("Marketing Cloud: unsubscribes sent, contact deletion on erasure", _marketing_cloud_panel))
