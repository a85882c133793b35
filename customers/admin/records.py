"""Golden records and their cross references: find, understand, fix.

A record's page shows its golden values with their lineage, contact points, cross references,
consent, its timeline and the panels other apps register in ``RECORD_PANELS``; every change a
steward makes there is a ``customers.stewardship`` action (one transaction, a history row).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from customers.admin.common import STEWARD_CSS, STEWARD_JS, LargeListMixin, actor_of, short_master_id
from customers.admin.history import format_moment, readable, timeline
from customers.choices import ContactPointKind, WritebackState
from customers.cim import phone_key
from customers.models import ContactPoint, CrossReference, Individual
from customers.normalize import normalize_email
from customers.resolution.survivorship import SURVIVING_FIELDS
from customers.review import SCORE_MEANING, compare_records, decision_rows
from customers.stewardship import (
    ResolutionError,
    erase_individual,
    merge_individuals,
    pin_value,
    recompute_golden_record,
    record_steward_opt_out,
    request_resync,
    set_source_status,
    steward_edit,
    unmerge_cross_reference,
    unpin_value,
)

# Panels other apps add to a golden record's page (integrations adds its sync runs): each
# takes the record and returns HTML. customers never imports integrations; they register here.
RECORD_PANELS: list[tuple[str, Callable[[Individual], SafeString]]] = []


class ContactPointInline(admin.TabularInline):
    """Contact points are computed from the source records (kept all); stewards add theirs as a source."""

    model = ContactPoint
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
        "source_records",
        "active_from_date",
    ]
    readonly_fields = fields
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="source record")
    def source_records(self, obj: ContactPoint) -> str:
        """The source records of the point's system that hold its value (all of that system's if none says so).

        The formset hands each point its golden record, whose cross references the page has read
        already (the admin's queryset prefetches them): no query per point.
        """
        of_system = [x for x in obj.individual.cross_references.all() if x.system == obj.source_system]
        value = (obj.email_address or obj.telephone_number or obj.address_line1).casefold()
        holding = [x for x in of_system if value and value in str(x.source_payload).casefold()]
        records = holding or of_system
        if not records:
            return obj.source_system or "-"
        return format_html_join(
            ", ",
            '<a href="{}">{} {}</a>',
            ((reverse("admin:customers_crossreference_change", args=[x.pk]), x.system, x.external_id) for x in records),
        )


class CrossReferenceInline(admin.TabularInline):
    model = CrossReference
    extra = 0
    fields = [
        "system",
        "external_id",
        "system_record_id",
        "business_unit",
        "status",
        "match_rule",
        "writeback_state",
        "source_master_id",
        "written_at",
        "writeback_error",
        "last_seen_at",
        "unmerge_link",
    ]
    readonly_fields = fields  # a source record is changed on its own page (status) or by unmerge
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="")
    def unmerge_link(self, obj: CrossReference) -> str:
        if not obj.pk:
            return ""
        url = reverse("admin:customers_crossreference_unmerge", args=[obj.pk])
        return format_html('<a class="button" href="{}">Unmerge…</a>', url)


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


class RecordStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("merged", "Merged (redirects)"), ("erased", "Erased")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Individual]) -> QuerySet[Individual]:
        value = self.value()
        if value == "active":
            return queryset.filter(merged_into__isnull=True, erased_at__isnull=True)
        if value == "merged":
            return queryset.filter(merged_into__isnull=False)
        if value == "erased":
            return queryset.filter(erased_at__isnull=False)
        return queryset


class ConsentFilter(admin.SimpleListFilter):
    title = "consent"
    parameter_name = "consent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("do_not_market", "Do not market"), ("marketable", "No opt-out")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Individual]) -> QuerySet[Individual]:
        if self.value() == "do_not_market":
            return queryset.filter(do_not_market_since__isnull=False)
        if self.value() == "marketable":
            return queryset.filter(do_not_market_since__isnull=True)
        return queryset


class WritebackFilter(admin.SimpleListFilter):
    title = "write-back state"
    parameter_name = "writeback"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(WritebackState.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Individual]) -> QuerySet[Individual]:
        if self.value():
            # A subquery, not a join: no duplicate rows and no DISTINCT over a large table.
            ids = CrossReference.objects.filter(writeback_state=self.value()).values("individual_id")
            return queryset.filter(pk__in=ids)
        return queryset


class GoldenRecordForm(forms.ModelForm):
    class Meta:
        model = Individual
        fields = ["salutation", "first_name", "middle_name", "last_name", "name_suffix", "birth_date", "gender"]


@admin.register(Individual)
class IndividualAdmin(LargeListMixin, admin.ModelAdmin):
    form = GoldenRecordForm
    list_display = [
        "short_id",
        "name",
        "primary_email",
        "sources",
        "consent",
        "record_status",
    ]
    # No "updated" column: at 1366 px, beside the admin's side bar and filters, it was cut off
    # (the updated-at filter and the record page keep it).
    list_display_links = None  # the short ID links to the record; the row's other cells are for reading
    list_filter = [RecordStatusFilter, SourceSystemFilter, ConsentFilter, WritebackFilter, "created_at", "updated_at"]
    # Searched by search_ids (one indexed lookup per kind of term); the list enables the box.
    search_fields = ["=master_id"]
    search_help_text = "Master ID (merged ones too), name (prefix), email, phone or external ID"
    readonly_fields = [
        "master_id",
        "party_type",
        "redirect",
        "do_not_market_since",
        "consent_source",
        "list_consents",
        "erased_at",
        "created_at",
        "updated_at",
        "lineage_table",
    ]
    fieldsets = [
        (None, {"fields": ["master_id", "redirect"]}),
        (
            "Golden values (an edit is kept as the steward's own source record)",
            {
                "fields": [
                    ("salutation", "first_name", "middle_name", "last_name", "name_suffix"),
                    ("birth_date", "gender"),
                ]
            },
        ),
        ("Lineage: where each value comes from", {"fields": ["lineage_table"]}),
        (
            "Consent: do-not-market is for all marketing; per list and channel below",
            {"fields": [("do_not_market_since", "consent_source"), "list_consents"]},
        ),
        ("Audit", {"fields": [("created_at", "updated_at", "erased_at")]}),
    ]
    inlines = [ContactPointInline, CrossReferenceInline]
    actions = ["resync", "merge_two", "recompute", "opt_out", "erase"]
    change_form_template = "admin/customers/individual/change_form.html"
    list_per_page = 50

    class Media:
        css = STEWARD_CSS
        js = STEWARD_JS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Individual]:
        return super().get_queryset(request).prefetch_related("contact_points", "cross_references")

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> tuple[Any, bool]:
        """One box: master ID (old merged ones too), name, email, phone, external ID.

        Each kind of term is one indexed lookup with a cap, never an OR of joins over the
        whole table, so a search stays fast with a million golden records.
        """
        term = " ".join(search_term.split())
        if not term:
            return queryset, False
        return queryset.filter(pk__in=search_ids(term)), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # golden records come from their sources (a steward's edit is a source too)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # golden records are never deleted here: merges and erasure keep their trail

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        """The admin's HISTORY button opens the record's own timeline (Django's log holds none of it)."""
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        return HttpResponseRedirect(reverse("admin:customers_individual_change", args=[obj.pk]) + "#timeline")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and (obj.merged_into_id or obj.erased_at):
            return False  # retired and erased records are read-only
        return super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Individual, form: Any, change: bool) -> None:
        if not change:
            raise PermissionDenied("golden records are created by their sources")
        values = {name: form.cleaned_data.get(name) for name in form.changed_data if name in SURVIVING_FIELDS}
        # The edit becomes the steward's source record; survivorship (steward first) yields the values.
        fresh = Individual.objects.get(pk=obj.pk)
        for name in values:
            setattr(obj, name, getattr(fresh, name))
        if values:
            try:
                steward_edit(obj, values, actor=actor_of(request), actor_user=request.user)
            except ResolutionError as exc:
                messages.error(request, str(exc))
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Contact points and cross references are read-only here: nothing of theirs is saved.
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    # -- display -------------------------------------------------------------------------------
    @admin.display(description="master ID", ordering="master_id")
    def short_id(self, obj: Individual) -> str:
        return short_master_id(obj.master_id, obj.pk)

    @admin.display(description="name", ordering="last_name")
    def name(self, obj: Individual) -> str:
        return " ".join(part for part in (obj.first_name, obj.last_name) if part) or "-"

    @admin.display(description="email")
    def primary_email(self, obj: Individual) -> str:
        emails = [cp for cp in obj.contact_points.all() if cp.kind == ContactPointKind.EMAIL]
        emails.sort(key=lambda cp: not cp.is_primary)
        return emails[0].email_address if emails else ""

    @admin.display(description="sources")
    def sources(self, obj: Individual) -> str:
        return ", ".join(sorted({x.system for x in obj.cross_references.all()}))

    @admin.display(description="consent", ordering="do_not_market_since")
    def consent(self, obj: Individual) -> str:
        # Words, not the admin's red cross: "no" to do-not-market is the ordinary case, not an error.
        if obj.do_not_market_since is None:
            return format_html('<span class="consent-ok">{}</span>', "No opt-out")
        return format_html(
            '<span class="consent-do-not-market" title="since {}">{}</span>',
            format_moment(obj.do_not_market_since),
            "Do not market",
        )

    @admin.display(description="status")
    def record_status(self, obj: Individual) -> str:
        return "merged" if obj.merged_into_id else "erased" if obj.erased_at else "active"

    @admin.display(description="merged into")
    def redirect(self, obj: Individual) -> str:
        if obj.merged_into_id is None:
            merged = list(obj.merged_records.values_list("master_id", flat=True)[:20])
            return f"(survivor of {', '.join(merged)})" if merged else "-"
        url = reverse("admin:customers_individual_change", args=[obj.merged_into_id])
        return format_html('<a href="{}">{}</a> (this ID redirects there)', url, obj.merged_into.master_id)

    @admin.display(description="consent per list and channel")
    def list_consents(self, obj: Individual) -> str:
        if obj.pk is None:
            return "-"
        consents = list(obj.subscription_consents.all())
        if not consents:
            return "No list-level consent recorded."
        head = "<tr><th>system</th><th>list</th><th>channel</th><th>status</th><th>since</th><th>captured by</th></tr>"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    c.system,
                    c.subscription_id,
                    c.get_channel_display(),
                    c.get_status_display(),
                    format_moment(c.effective_from),
                    c.capture_source or "-",
                )
                for c in consents
            ),
        )
        return format_html('<table class="list-consents">{}{}</table>', mark_safe(head), rows)  # noqa: S308

    @admin.display(description="lineage")
    def lineage_table(self, obj: Individual) -> str:
        if obj.pk is None:
            return "-"
        rows = []
        for name in SURVIVING_FIELDS:
            entry = (obj.lineage or {}).get(name) or {}
            value = getattr(obj, name)
            pinned = name in (obj.pins or {})
            pin_url = reverse("admin:customers_individual_pin", args=[obj.pk]) + f"?attribute={name}"
            source = f"{entry.get('system', '')} {entry.get('externalId', '')}".strip()
            rows.append(
                format_html(
                    "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href='{}'>{}</a></td></tr>",
                    name.replace("_", " "),
                    value if value not in (None, "") else "-",
                    source or ("steward pin" if pinned else "-"),
                    readable(entry.get("at")),
                    entry.get("rule", ""),
                    pin_url,
                    "unpin" if pinned else "pin",
                )
            )
        head = "<tr><th>attribute</th><th>value</th><th>source record</th><th>when</th><th>why</th><th></th></tr>"
        return mark_safe(f'<table class="lineage">{head}{"".join(rows)}</table>')  # noqa: S308 (parts escaped)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if obj is not None:
            context["timeline"] = timeline(obj)
            context["panels"] = [(title, render(obj)) for title, render in RECORD_PANELS]
        context["show_save_and_add_another"] = False
        return super().change_view(request, object_id, form_url, context)

    # -- steward views -------------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        own = [
            path("<int:pk>/pin/", self.admin_site.admin_view(self.pin_view), name="customers_individual_pin"),
            path("merge/", self.admin_site.admin_view(self.merge_view), name="customers_individual_merge"),
        ]
        return own + super().get_urls()

    def pin_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not request.user.has_perm("customers.pin_individual"):
            raise PermissionDenied
        individual = get_object_or_404(Individual, pk=pk)
        attribute = request.GET.get("attribute") or request.POST.get("attribute", "")
        if attribute not in SURVIVING_FIELDS:
            raise PermissionDenied("not a pinnable attribute")
        change_url = reverse("admin:customers_individual_change", args=[pk])
        if request.method == "POST":
            try:
                if "_unpin" in request.POST:
                    unpin_value(individual, attribute, actor=actor_of(request), actor_user=request.user)
                    messages.success(request, f"{attribute} unpinned: survivorship chooses it again.")
                else:
                    value = request.POST.get("value", "").strip()
                    pin_value(individual, attribute, value, actor=actor_of(request), actor_user=request.user)
                    messages.success(request, f"{attribute} pinned.")
            except ValueError as exc:
                messages.error(request, str(exc))
            return HttpResponseRedirect(change_url)
        return TemplateResponse(
            request,
            "admin/customers/individual/pin.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Pin {attribute.replace('_', ' ')} of {individual.master_id}",
                "individual": individual,
                "attribute": attribute,
                "current": getattr(individual, attribute),
                "pinned": attribute in (individual.pins or {}),
                "opts": self.model._meta,
                "change_url": change_url,
            },
        )

    def merge_view(self, request: HttpRequest) -> HttpResponse:
        """Merge two records a steward found (ids in the query): preview, then confirm."""
        if not request.user.has_perm("customers.merge_individual"):
            raise PermissionDenied
        ids = [int(i) for i in (request.GET.get("ids") or request.POST.get("ids", "")).split(",") if i.isdigit()]
        records = list(Individual.objects.filter(pk__in=ids).order_by("created_at", "pk"))
        if len(records) != 2:
            messages.error(request, "Select exactly two golden records to merge.")
            return HttpResponseRedirect(reverse("admin:customers_individual_changelist"))
        if request.method == "POST":
            try:
                survivor = merge_individuals(*records, actor=actor_of(request), actor_user=request.user)
            except ResolutionError as exc:
                messages.error(request, str(exc))
                return HttpResponseRedirect(reverse("admin:customers_individual_changelist"))
            messages.success(request, f"Merged: {survivor.master_id} survives; the other ID redirects to it.")
            return HttpResponseRedirect(reverse("admin:customers_individual_change", args=[survivor.pk]))
        return TemplateResponse(
            request,
            "admin/customers/individual/merge.html",
            {
                **self.admin_site.each_context(request),
                "title": "Merge two golden records",
                "comparison": compare_records(records[0], records[1]),
                "ids": ",".join(str(r.pk) for r in records),
                "opts": self.model._meta,
            },
        )

    # -- actions -------------------------------------------------------------------------------
    @admin.action(description="Erase personal data of selected people (GDPR, irreversible)", permissions=["erase"])
    def erase(self, request: HttpRequest, queryset: QuerySet[Individual]) -> None:
        count = 0
        for individual in queryset.filter(erased_at__isnull=True)[:100]:
            with transaction.atomic():
                erase_individual(individual, actor=actor_of(request), actor_user=request.user)
            count += 1
        self.message_user(request, f"Erased {count} record(s); source systems are being told.", messages.SUCCESS)

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("customers.erase_individual")

    @admin.action(description="Merge the two selected records (preview first)", permissions=["merge"])
    def merge_two(self, request: HttpRequest, queryset: QuerySet[Individual]) -> HttpResponse | None:
        ids = list(queryset.values_list("pk", flat=True)[:3])
        if len(ids) != 2:
            self.message_user(request, "Select exactly two golden records to merge.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:customers_individual_merge") + f"?ids={ids[0]},{ids[1]}")

    def has_merge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("customers.merge_individual")

    @admin.action(
        description="Recompute selected records from their sources (survivorship rules)", permissions=["change"]
    )
    def recompute(self, request: HttpRequest, queryset: QuerySet[Individual]) -> None:
        count = 0
        for individual in queryset.filter(merged_into__isnull=True, erased_at__isnull=True)[:500]:
            with transaction.atomic():
                recompute_golden_record(individual, actor=actor_of(request), actor_user=request.user)
            count += 1
        self.message_user(request, f"Recomputed {count} record(s).", messages.SUCCESS)

    @admin.action(
        description="Re-sync selected records to Marketing Cloud and downstream systems", permissions=["resync"]
    )
    def resync(self, request: HttpRequest, queryset: QuerySet[Individual]) -> None:
        count = 0
        for individual in queryset.filter(merged_into__isnull=True, erased_at__isnull=True)[:500]:
            request_resync(individual, actor=actor_of(request), actor_user=request.user)
            count += 1
        url = reverse("admin:integrations_syncrun_changelist") + "?trigger__exact=resync"
        self.message_user(
            request,
            format_html('Re-sync queued for {} record(s): <a href="{}">see the new sync runs</a>.', count, url),
            messages.SUCCESS,
        )

    def has_resync_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("customers.resync_individual")

    @admin.action(
        description="Record an opt-out of all marketing for selected people (sending systems are told)",
        permissions=["change"],
    )
    def opt_out(self, request: HttpRequest, queryset: QuerySet[Individual]) -> None:
        count = 0
        for individual in queryset.filter(merged_into__isnull=True, erased_at__isnull=True)[:500]:
            count += record_steward_opt_out(individual, actor=actor_of(request), actor_user=request.user)
        self.message_user(request, f"Opt-out recorded for {count} record(s).", messages.SUCCESS)


SEARCH_CAP = 500


def search_ids(term: str) -> list[int]:
    """Golden record IDs a steward's search term finds (each lookup uses an index)."""
    ids: set[int] = set()

    def add(queryset: Any, field: str = "pk") -> None:
        ids.update(v for v in queryset.values_list(field, flat=True)[:SEARCH_CAP] if v is not None)

    add(Individual.objects.filter(master_id=term))
    add(Individual.objects.filter(master_id=term, merged_into__isnull=False), "merged_into_id")
    add(CrossReference.objects.filter(external_id=term), "individual_id")
    with contextlib.suppress(ValueError):
        add(ContactPoint.objects.filter(kind=ContactPointKind.EMAIL, value_key=normalize_email(term)), "individual_id")
    if any(ch.isdigit() for ch in term):
        with contextlib.suppress(ValueError):
            add(ContactPoint.objects.filter(kind=ContactPointKind.PHONE, value_key=phone_key(term)), "individual_id")
    words = term.split(" ")
    if len(words) >= 2:
        add(Individual.objects.filter(first_name__istartswith=words[0], last_name__istartswith=words[-1]))
    else:
        add(Individual.objects.filter(last_name__istartswith=term))
        add(Individual.objects.filter(first_name__istartswith=term))
    return sorted(ids)[: SEARCH_CAP * 2]


@admin.register(CrossReference)
class CrossReferenceAdmin(LargeListMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "golden_record",
        "business_unit",
        "match_rule",
        "status",
        "source_status",
        "writeback_state",
        "written_at",
        "last_seen_at",
    ]
    list_filter = ["system", "business_unit", "status", "writeback_state", "last_seen_at"]
    search_fields = ["=external_id", "=individual__master_id"]
    list_select_related = ["individual"]
    readonly_fields = [
        "individual",
        "system",
        "external_id",
        "system_record_id",
        "business_unit",
        "source_status",
        "first_seen_at",
        "last_seen_at",
        "source_modified_at",
        "source_payload",
        "source_master_id",
        "written_at",
        "writeback_error",
        "writeback_state",
        "match_rule",
        "match_comparison",
        "created_at",
        "updated_at",
    ]
    fields = ["status", *readonly_fields]

    class Media:
        css = STEWARD_CSS
        js = STEWARD_JS

    @admin.display(description="match comparison")
    def match_comparison(self, obj: CrossReference) -> SafeString | str:
        """The stored match decision as the pair page's per-attribute table, not its JSON."""
        detail = obj.match_detail if isinstance(obj.match_detail, dict) else {}
        rows = decision_rows(detail)
        if not detail:
            return "-"
        other = [] if rows else [(key, value) for key, value in detail.items() if key not in ("outcome", "rule")]
        return render_to_string(
            "admin/customers/decision.html",
            {
                "detail": detail,
                "rows": rows,
                "other": other,
                "score_meaning": SCORE_MEANING,
                "incoming_label": "this source record",
                "candidate_label": "the golden record it joined",
            },
        )

    @admin.display(description="golden record", ordering="individual__master_id")
    def golden_record(self, obj: CrossReference) -> str:
        return short_master_id(obj.individual.master_id, obj.individual_id)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # source records come from their systems

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a source record is marked invalid or unmerged, never deleted

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        """The HISTORY button opens the timeline of the golden record this source record feeds."""
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        url = reverse("admin:customers_individual_change", args=[obj.individual_id])
        return HttpResponseRedirect(url + "#timeline")

    def save_model(self, request: HttpRequest, obj: CrossReference, form: Any, change: bool) -> None:
        """Only the status is editable: an invalid source record stops supplying the golden record."""
        if not change or "status" not in form.changed_data:
            return
        stored = CrossReference.objects.select_related("individual").get(pk=obj.pk)
        try:
            set_source_status(stored, form.cleaned_data["status"], actor=actor_of(request), actor_user=request.user)
        except ResolutionError as exc:
            messages.error(request, str(exc))
        obj.refresh_from_db()

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.unmerge_view)
        return [path("<int:pk>/unmerge/", view, name="customers_crossreference_unmerge"), *super().get_urls()]

    def unmerge_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Confirm, then split this source record off into its own golden record."""
        if not request.user.has_perm("customers.merge_individual"):
            raise PermissionDenied
        xref = get_object_or_404(CrossReference.objects.select_related("individual"), pk=pk)
        back = reverse("admin:customers_individual_change", args=[xref.individual_id])
        if request.method == "POST":
            try:
                split = unmerge_cross_reference(xref, actor=actor_of(request), actor_user=request.user)
            except ResolutionError as exc:
                messages.error(request, str(exc))
                return HttpResponseRedirect(back)
            messages.success(
                request, f"{xref} now has its own golden record {split.master_id}; its new master ID is written back."
            )
            return HttpResponseRedirect(reverse("admin:customers_individual_change", args=[split.pk]))
        return TemplateResponse(
            request,
            "admin/customers/crossreference/unmerge.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Unmerge {xref}",
                "xref": xref,
                "siblings": xref.individual.cross_references.exclude(pk=xref.pk),
                "back": back,
                "opts": self.model._meta,
            },
        )
