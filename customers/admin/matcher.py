"""Admin for matcher models: versions, their m/u/weights per level and training report, activation after a dry run."""

from __future__ import annotations

from typing import Any

from auditlog.mixins import AuditlogHistoryAdminMixin
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from customers.admin.common import actor_of
from customers.choices import MatcherStatus
from customers.dryrun import run_model_dry_run
from customers.models import MatcherModel
from customers.resolution.rules import OUTCOME_AUTO, OUTCOME_NONE, OUTCOME_SUSPECT
from customers.resolution.weights import model_of
from customers.stewardship import activate_matcher_model, retire_matcher_model

# Plain words for the engine's outcome codes on the dry-run page.
OUTCOME_WORDS = {OUTCOME_AUTO: "auto-merge", OUTCOME_SUSPECT: "review", OUTCOME_NONE: "no match"}
METRICS = ("auto_merges", "false_auto_merges", "precision", "recall", "recall_with_review")


def plain_outcome(label: str) -> str:
    """'suspect: Shared phone' -> 'review (Shared phone)'; the rule name is kept as the steward knows it."""
    outcome, _, rule = label.partition(": ")
    words = OUTCOME_WORDS.get(outcome, outcome.replace("_", " "))
    return f"{words} ({rule})" if rule else words


def threshold_bands(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The training report's per-threshold rows, runs of identical figures folded into one band.

    Training scores 101 thresholds; most neighbours give the same figures, and a 100-row table
    hides the few places where precision or recall moves. The bands holding the chosen thresholds
    are marked.
    """
    rows = [r for r in report.get("thresholds") or [] if isinstance(r, dict)]
    bands: list[dict[str, Any]] = []
    for row in rows:
        figures = tuple(row.get(k) for k in METRICS)
        if bands and bands[-1]["figures"] == figures:
            bands[-1]["to"] = row.get("threshold")
        else:
            bands.append({"figures": figures, "from": row.get("threshold"), "to": row.get("threshold"), **row})
    chosen = {report.get("auto_threshold"): "auto-merge", report.get("review_threshold"): "review"}
    for band in bands:
        marks = [
            name
            for value, name in chosen.items()
            if isinstance(value, int | float)
            and isinstance(band["from"], int | float)
            and band["from"] <= value <= band["to"]
        ]
        band["chosen"] = ", ".join(marks)
    return bands


def thresholds_undecided(report: dict[str, Any], bands: list[dict[str, Any]]) -> bool:
    """True when the training labels could not tell the thresholds apart.

    With weak labels and every non-rule pair guarded, each threshold meets the target precision;
    training then falls back to the model's own floor, and a steward should know before activating
    such a model. Reports written before training said so are judged by their table.
    """
    if "labels_undecided" in report:
        return bool(report["labels_undecided"])
    rows = [r for r in report.get("thresholds") or [] if isinstance(r, dict)]
    auto = report.get("auto_threshold")
    if not rows or not isinstance(auto, int | float):
        return False
    lowest = rows[0].get("threshold")
    return len(bands) == 1 or (isinstance(lowest, int | float) and auto <= lowest)


# A smaller scan than a rule change's: every pair is scored twice, and the steward waits for it.
DRY_RUN_SAMPLE = 1000


@admin.register(MatcherModel)
class MatcherModelAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    show_auditlog_history_link = True
    list_display = [
        "version_label",
        "status",
        "auto_merge_from",
        "review_from",
        "created_at",
        "created_by",
        "activated_at",
        "activated_by",
    ]
    list_filter = ["status"]
    ordering = ["-version"]
    fields = ["notes"]
    change_form_template = "admin/customers/matchermodel/change_form.html"

    @admin.display(description="version", ordering="version")
    def version_label(self, obj: MatcherModel) -> str:
        return f"v{obj.version}"

    # The thresholds are match weights in bits: one decimal, under names that say what they decide.
    @admin.display(description="auto-merge at weight ≥", ordering="auto_threshold")
    def auto_merge_from(self, obj: MatcherModel) -> str:
        return f"{obj.auto_threshold:.1f}"

    @admin.display(description="review from weight", ordering="review_threshold")
    def review_from(self, obj: MatcherModel) -> str:
        return f"{obj.review_threshold:.1f}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # drafts come from ``manage.py train_matcher``

    def has_delete_permission(self, request: HttpRequest, obj: MatcherModel | None = None) -> bool:
        # Versions are history: every decision names the version that made it.
        return False

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "<int:object_id>/activate/",
                self.admin_site.admin_view(self.activate_view),
                name="customers_matchermodel_activate",
            ),
            path(
                "<int:object_id>/deactivate/",
                self.admin_site.admin_view(self.deactivate_view),
                name="customers_matchermodel_deactivate",
            ),
        ]
        return extra + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        row = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if row is not None:
            report = row.training_report if isinstance(row.training_report, dict) else {}
            bands = threshold_bands(report)
            levels = model_of(row).table()
            for n, level in enumerate(levels):
                # The attribute is named once, on its first level's row.
                level["first"] = n == 0 or levels[n - 1]["attribute"] != level["attribute"]
                level["attribute_label"] = str(level["attribute"]).replace("_", " ")
            context |= {
                "levels": levels,
                "report": report,
                "bands": bands,
                "thresholds_undecided": thresholds_undecided(report, bands),
                "can_activate": self.has_change_permission(request, row),
                "row": row,
            }
        return super().change_view(request, object_id, form_url, context)

    def activate_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """GET: the dry run (pairs decided as today and under this model); POST: activate."""
        row = get_object_or_404(MatcherModel, pk=object_id)
        if not self.has_change_permission(request, row):
            raise PermissionDenied
        if request.method == "POST":
            if request.POST.get("confirm") != "yes":
                return HttpResponseRedirect(reverse("admin:customers_matchermodel_activate", args=[row.pk]))
            retired = activate_matcher_model(row, actor=actor_of(request))
            note = f" (v{retired.version} retired; it can be activated again)" if retired else ""
            self.message_user(request, f"Matcher model v{row.version} is active{note}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:customers_matchermodel_change", args=[row.pk]))
        report = run_model_dry_run(model_of(row), sample=DRY_RUN_SAMPLE)
        transitions = [
            {"before": plain_outcome(t["before"]), "after": plain_outcome(t["after"]), "pairs": t["pairs"]}
            for t in report.rows()
        ]
        examples = [
            ex | {"before": plain_outcome(ex["before"]), "after": plain_outcome(ex["after"])} for ex in report.examples
        ]
        active = MatcherModel.objects.filter(status=MatcherStatus.ACTIVE).first()
        return TemplateResponse(
            request,
            "admin/customers/matchermodel/activate.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Activate matcher model v{row.version}?",
                "row": row,
                "active": active,
                "dry_run": report,
                "transitions": transitions,
                "examples": examples,
                "opts": self.model._meta,
                "original": row,
            },
        )

    def deactivate_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        row = get_object_or_404(MatcherModel, pk=object_id)
        if not self.has_change_permission(request, row) or request.method != "POST":
            raise PermissionDenied
        retire_matcher_model(row)
        self.message_user(request, f"Matcher model v{row.version} retired: the rules alone decide.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:customers_matchermodel_change", args=[row.pk]))
