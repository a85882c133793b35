"""The steward's view of golden records, cross references and history."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from customers.actions import erase_individual, record_steward_edit, request_resync
from customers.choices import ContactPointKind
from customers.models import ContactPoint, CrossReference, HistoryEntry, Individual
from customers.normalize import address_key, normalize_email, normalize_phone


class ContactPointForm(forms.ModelForm):
    """Recomputes the normalised matching key from what the steward typed."""

    class Meta:
        model = ContactPoint
        fields = [
            "kind",
            "is_primary",
            "email_address",
            "telephone_number",
            "address_line1",
            "city_name",
            "postal_code_text",
            "state_province_name",
            "country_name",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind = data.get("kind")
        try:
            if kind == ContactPointKind.EMAIL:
                self.instance.value_key = normalize_email(data.get("email_address") or "")
            elif kind == ContactPointKind.PHONE:
                self.instance.value_key = normalize_phone(data.get("telephone_number") or "")
            elif kind == ContactPointKind.ADDRESS:
                self.instance.value_key = address_key(
                    data.get("address_line1") or "",
                    data.get("city_name") or "",
                    data.get("postal_code_text") or "",
                    data.get("country_name") or "",
                )
        except ValueError as exc:
            field = "email_address" if kind == ContactPointKind.EMAIL else "telephone_number"
            raise forms.ValidationError({field: str(exc)}) from None
        return data


class ContactPointInline(admin.TabularInline):
    model = ContactPoint
    form = ContactPointForm
    extra = 0
    fields = [
        "kind",
        "is_primary",
        "email_address",
        "telephone_number",
        "address_line1",
        "city_name",
        "postal_code_text",
        "country_name",
        "source_system",
        "active_from_date",
    ]
    readonly_fields = ["source_system", "active_from_date"]
    show_change_link = False


class CrossReferenceInline(admin.TabularInline):
    model = CrossReference
    extra = 0
    fields = [
        "system",
        "external_id",
        "status",
        "source_status",
        "writeback_state",
        "source_master_id",
        "written_at",
        "writeback_error",
        "first_seen_at",
        "last_seen_at",
    ]
    readonly_fields = [
        "system",
        "external_id",
        "source_status",
        "writeback_state",
        "source_master_id",
        "written_at",
        "writeback_error",
        "first_seen_at",
        "last_seen_at",
    ]
    show_change_link = True
    can_delete = False


class HistoryInline(admin.TabularInline):
    model = HistoryEntry
    extra = 0
    fields = ["created_at", "action", "object_type", "object_id", "actor", "before", "after"]
    readonly_fields = fields
    can_delete = False
    ordering = ["-created_at", "-id"]
    verbose_name_plural = "history (newest first)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SourceSystemFilter(admin.SimpleListFilter):
    title = "source system"
    parameter_name = "system"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        systems = CrossReference.objects.order_by().values_list("system", flat=True).distinct()[:50]
        return [(s, s) for s in systems]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Individual]) -> QuerySet[Individual]:
        if self.value():
            return queryset.filter(cross_references__system=self.value()).distinct()
        return queryset


@admin.register(Individual)
class IndividualAdmin(admin.ModelAdmin):
    list_display = [
        "master_id",
        "first_name",
        "last_name",
        "primary_email",
        "sources",
        "consent",
        "erased_at",
        "updated_at",
    ]
    list_filter = [SourceSystemFilter, "created_at", "updated_at"]
    search_fields = [
        "=master_id",
        "first_name",
        "last_name",
        "=contact_points__value_key",
        "=cross_references__external_id",
    ]
    readonly_fields = [
        "master_id",
        "party_type",
        "do_not_market_since",
        "consent_source",
        "erased_at",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["master_id", "party_type"]}),
        ("Name", {"fields": [("salutation", "first_name", "middle_name", "last_name", "name_suffix")]}),
        ("Person", {"fields": [("birth_date", "gender")]}),
        ("Consent", {"fields": [("do_not_market_since", "consent_source")]}),
        ("Audit", {"fields": [("created_at", "updated_at", "erased_at")]}),
    ]
    inlines = [ContactPointInline, CrossReferenceInline, HistoryInline]
    actions = ["resync", "erase"]
    show_full_result_count = False
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[Individual]:
        return super().get_queryset(request).prefetch_related("contact_points", "cross_references")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # golden records are never deleted here: merges and erasure keep their trail

    def save_model(self, request: HttpRequest, obj: Individual, form: Any, change: bool) -> None:
        # Kept for save_related, which writes the history and change event once the inlines are saved.
        request._hub_before = {name: form.initial.get(name) for name in form.changed_data}  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        contact_points_changed = any(
            fs.model is ContactPoint and (fs.new_objects or fs.changed_objects or fs.deleted_objects) for fs in formsets
        )
        record_steward_edit(
            form.instance,
            before=getattr(request, "_hub_before", {}),
            changed_fields=list(form.changed_data),
            contact_points_changed=contact_points_changed,
            user=request.user,
        )

    @admin.display(description="email")
    def primary_email(self, obj: Individual) -> str:
        emails = [cp for cp in obj.contact_points.all() if cp.kind == ContactPointKind.EMAIL]
        emails.sort(key=lambda cp: not cp.is_primary)
        return emails[0].email_address if emails else ""

    @admin.display(description="sources")
    def sources(self, obj: Individual) -> str:
        return ", ".join(sorted({x.system for x in obj.cross_references.all()}))

    @admin.display(description="do not market", boolean=True)
    def consent(self, obj: Individual) -> bool:
        return obj.do_not_market_since is not None

    @admin.action(description="Erase personal data of selected people (GDPR, irreversible)", permissions=["erase"])
    def erase(self, request: HttpRequest, queryset: QuerySet[Individual]) -> None:
        count = 0
        for individual in queryset.filter(erased_at__isnull=True)[:100]:
            with transaction.atomic():
                erase_individual(individual, actor=f"user:{request.user.get_username()}", actor_user=request.user)
            count += 1
        self.message_user(request, f"Erased {count} record(s); source systems are being told.", messages.SUCCESS)

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("customers.erase_individual")

    @admin.action(description="Re-sync selected records to Marketing Cloud and downstream systems")
    def resync(self, request: HttpRequest, queryset: QuerySet[Individual]) -> None:
        count = 0
        for individual in queryset[:500]:
            request_resync(individual, actor=f"user:{request.user.get_username()}", actor_user=request.user)
            count += 1
        self.message_user(request, f"Re-sync queued for {count} record(s); see Sync runs.", messages.SUCCESS)


@admin.register(CrossReference)
class CrossReferenceAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "golden_record",
        "status",
        "source_status",
        "writeback_state",
        "written_at",
        "last_seen_at",
    ]
    list_filter = ["system", "status", "writeback_state", "last_seen_at"]
    search_fields = ["=external_id", "=individual__master_id"]
    list_select_related = ["individual"]
    raw_id_fields = ["individual"]
    readonly_fields = [
        "first_seen_at",
        "last_seen_at",
        "source_modified_at",
        "source_payload",
        "source_master_id",
        "written_at",
        "writeback_error",
        "writeback_state",
        "created_at",
        "updated_at",
    ]
    show_full_result_count = False

    @admin.display(description="golden record", ordering="individual__master_id")
    def golden_record(self, obj: CrossReference) -> str:
        return format_html('<a href="../individual/{}/change/">{}</a>', obj.individual_id, obj.individual.master_id)


@admin.register(HistoryEntry)
class HistoryEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "master_id", "action", "object_type", "actor"]
    list_filter = ["action", "object_type", "created_at"]
    search_fields = ["=master_id", "actor"]
    readonly_fields = [f.name for f in HistoryEntry._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
