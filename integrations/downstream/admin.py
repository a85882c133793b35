"""Downstream targets with their deliveries, last error and lag; dead deliveries replayable.

Where a target sends (url) and how it signs (secret) are for administrators (superusers) only: for
anyone else both are read-only, the secret is not shown, and a save that would change either is
refused. Stewards keep enabling, disabling, resuming and replaying.
"""

from __future__ import annotations

from typing import Any

from auditlog.mixins import AuditlogHistoryAdminMixin
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from integrations.downstream.delivery import replay, resume, status_counts, target_lag_seconds
from integrations.downstream.models import Delivery, DownstreamTarget


@admin.register(DownstreamTarget)
class DownstreamTargetAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    show_auditlog_history_link = True
    list_display = [
        "name",
        "kind",
        "url",
        "enabled",
        "deliveries",
        "lag",
        "paused_until",
        "last_success_at",
        "short_error",
    ]
    list_filter = ["kind", "enabled"]
    fields = [
        "name",
        "kind",
        "url",
        "secret",
        "event_types",
        "enabled",
        "paused_until",
        "pause_reason",
        "consecutive_failures",
        "last_error",
        "last_success_at",
        "cursor",
    ]
    readonly_fields = [
        "paused_until",
        "pause_reason",
        "consecutive_failures",
        "last_error",
        "last_success_at",
        "cursor",
    ]
    actions = ["resume"]
    # A URL typed without a scheme is an https one.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    # Where a target sends, how it signs, and what kind of target it is (the kind decides whether the
    # Salesforce OAuth credentials go to its URL) are for administrators only.
    ADMIN_ONLY_FIELDS = ("url", "secret", "kind")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_fields(request, obj))
        if request.user.is_superuser:
            return fields
        return ["secret_hidden" if name == "secret" else name for name in fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += ["url", "secret_hidden", "kind"]
        return readonly

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A new target is a new url and secret.
        return request.user.is_superuser

    def save_model(self, request: HttpRequest, obj: DownstreamTarget, form: Any, change: bool) -> None:
        # The form has no url or secret field for non-superusers; this holds even if a later form did.
        if not request.user.is_superuser:
            stored = DownstreamTarget.objects.filter(pk=obj.pk).values(*self.ADMIN_ONLY_FIELDS).first()
            if stored is None or any(stored[name] != getattr(obj, name) for name in self.ADMIN_ONLY_FIELDS):
                raise PermissionDenied("Only administrators may change a target's URL, secret or kind.")
        super().save_model(request, obj, form, change)

    @admin.display(description="secret")
    def secret_hidden(self, obj: DownstreamTarget) -> str:
        return "(set; only administrators see and change it)" if obj.secret else "-"

    @admin.display(description="deliveries")
    def deliveries(self, obj: DownstreamTarget) -> str:
        counts = status_counts(obj)
        return ", ".join(f"{counts.get(s, 0)} {s}" for s in ("delivered", "pending", "dead"))

    @admin.display(description="lag")
    def lag(self, obj: DownstreamTarget) -> str:
        seconds = target_lag_seconds(obj)
        return "-" if seconds is None else f"{seconds:,.0f} s"

    @admin.display(description="last error")
    def short_error(self, obj: DownstreamTarget) -> str:
        return obj.last_error[:80]

    @admin.action(description="Resume now (lift the pause)", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[DownstreamTarget]) -> None:
        for target in queryset:
            resume(target)
        self.message_user(request, "Resumed.", messages.SUCCESS)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "target",
        "master_id",
        "change_id",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["status", "target", "created_at"]
    search_fields = ["=master_id", "=change__id"]
    readonly_fields = [
        "target",
        "change",
        "master_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_response_bytes",
        "last_error",
        "created_at",
        "delivered_at",
    ]
    list_select_related = ["target"]
    actions = ["replay_dead"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Replay selected dead-lettered deliveries", permissions=["change"])
    def replay_dead(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = 0
        for delivery in queryset.filter(status=Delivery.DEAD)[:1000]:
            replay(delivery)
            count += 1
        self.message_user(request, f"Replayed {count} delivery(ies).", messages.SUCCESS)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.readonly_fields
