"""Downstream targets with their deliveries, last error and lag; dead deliveries replayable."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from integrations.downstream.delivery import replay, status_counts, target_lag_seconds
from integrations.downstream.models import Delivery, DownstreamTarget


@admin.register(DownstreamTarget)
class DownstreamTargetAdmin(admin.ModelAdmin):
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
        from integrations.downstream.delivery import DELIVER_TASK, deliver_flag
        from integrations.queue import enqueue_once

        for target in queryset:
            DownstreamTarget.objects.filter(pk=target.pk).update(
                paused_until=None, consecutive_failures=0, pause_reason=""
            )
            enqueue_once(DELIVER_TASK, target.pk, flag=deliver_flag(target.pk))
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
