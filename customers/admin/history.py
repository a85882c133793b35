"""The history rows, read-only, and a golden record's timeline."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from customers.admin.common import LargeListMixin
from customers.models import HistoryEntry, Individual


def timeline(individual: Individual, limit: int = 200) -> list[HistoryEntry]:
    """The record's history newest first, with that of the records merged into it."""
    ids = [individual.pk, *individual.merged_records.values_list("pk", flat=True)]
    return list(
        HistoryEntry.objects.filter(individual_id__in=ids)
        .select_related("actor_user")
        .order_by("-created_at", "-id")[:limit]
    )


@admin.register(HistoryEntry)
class HistoryEntryAdmin(LargeListMixin, admin.ModelAdmin):
    list_display = ["created_at", "master_id", "action", "object_type", "actor"]
    list_filter = ["action", "object_type", "created_at"]
    search_fields = ["=master_id", "actor"]
    readonly_fields = [f.name for f in HistoryEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
