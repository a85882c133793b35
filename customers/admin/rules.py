"""Admin for the rules stewards own: match rules (with a dry run) and survivorship rules."""

from __future__ import annotations

import json
from typing import Any

from auditlog.mixins import AuditlogHistoryAdminMixin
from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from customers.admin.common import actor_of
from customers.dryrun import proposed_rules, run_dry_run
from customers.models import MatchRule, SurvivorshipRule
from customers.resolution.rules import METHODS_BY_ATTRIBUTE, RuleSpec, parse_criteria
from customers.resolution.survivorship import SURVIVING_FIELDS


class CriteriaField(forms.JSONField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 10, "cols": 90, "class": "vLargeTextField"}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        # One criterion per line reads better than one long line.
        if isinstance(value, list):
            return "[\n" + ",\n".join("  " + json.dumps(item) for item in value) + "\n]"
        return super().prepare_value(value)


class MatchRuleForm(forms.ModelForm):
    criteria = CriteriaField(
        help_text="All criteria must hold. Each: attribute, method, optional threshold (0-1), blank_matches, and "
        "differs (true: holds when both sides have a value that does not agree by the method; for guards). "
        + "; ".join(f"{a}: {', '.join(m)}" for a, m in METHODS_BY_ATTRIBUTE.items())
    )

    class Meta:
        model = MatchRule
        fields = ["name", "description", "outcome", "priority", "enabled", "criteria"]

    def clean_criteria(self) -> Any:
        value = self.cleaned_data["criteria"]
        try:
            parse_criteria(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return value


@admin.register(MatchRule)
class MatchRuleAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    form = MatchRuleForm
    show_auditlog_history_link = True
    list_display = ["name", "outcome", "priority", "enabled", "criteria_summary", "updated_at", "updated_by"]
    list_filter = ["outcome", "enabled"]
    ordering = ["outcome", "priority", "id"]
    readonly_fields = ["updated_at", "updated_by"]
    change_form_template = "admin/customers/matchrule/change_form.html"

    @admin.display(description="criteria (all must hold)")
    def criteria_summary(self, obj: MatchRule) -> str:
        try:
            return " AND ".join(c.describe() for c in parse_criteria(obj.criteria))
        except ValueError as exc:
            return f"invalid: {exc}"

    def save_model(self, request: HttpRequest, obj: MatchRule, form: Any, change: bool) -> None:
        obj.updated_by = actor_of(request)
        super().save_model(request, obj, form, change)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST" and "_dryrun" in request.POST:
            return self._dry_run(request, object_id, form_url)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _dry_run(self, request: HttpRequest, object_id: str | None, form_url: str) -> HttpResponse:
        """Validate the edited rule and report what it would change; nothing is saved."""
        obj = self.get_object(request, object_id) if object_id else None
        if not (self.has_change_permission(request, obj) if obj else self.has_add_permission(request)):
            raise PermissionDenied
        form = self.get_form(request, obj, change=obj is not None)(request.POST, instance=obj)
        report = None
        if form.is_valid():
            data = form.cleaned_data
            spec = RuleSpec(data["name"], data["outcome"], parse_criteria(data["criteria"]), obj.pk if obj else None)
            report = run_dry_run(proposed_rules(obj.pk if obj else None, spec if data["enabled"] else None))
        fieldsets = list(self.get_fieldsets(request, obj))
        admin_form = helpers.AdminForm(form, fieldsets, {}, self.get_readonly_fields(request, obj), model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Dry run: {obj or 'new match rule'}",
            "adminform": admin_form,
            "object_id": object_id,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            "dry_run": report,
        }
        return self.render_change_form(request, context, add=obj is None, change=obj is not None, obj=obj)


class SurvivorshipRuleForm(forms.ModelForm):
    class Meta:
        model = SurvivorshipRule
        fields = ["attribute", "strategy", "source_priority"]

    def clean_attribute(self) -> str:
        value = self.cleaned_data["attribute"]
        if value not in SURVIVING_FIELDS:
            raise forms.ValidationError(f"must be one of {', '.join(SURVIVING_FIELDS)}")
        return value


@admin.register(SurvivorshipRule)
class SurvivorshipRuleAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    form = SurvivorshipRuleForm
    show_auditlog_history_link = True
    list_display = ["attribute", "strategy", "source_priority", "updated_at"]
    list_editable = ["strategy", "source_priority"]
    help_text = "Applies the next time a record is recomputed (a source change, a merge, or the recompute action)."
