"""The review queue: suspect pairs, oldest first, compared side by side and decided in one click."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from customers.admin.common import LargeListMixin, actor_of
from customers.choices import CandidateStatus
from customers.models import MatchCandidate
from customers.review import SCORE_MEANING, compare_records, weight_parts, weight_summary
from customers.stewardship import ResolutionError, mark_not_a_match, merge_individuals, skip_candidate


@admin.register(MatchCandidate)
class MatchCandidateAdmin(LargeListMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "left_record",
        "right_record",
        "rule",
        "score_display",
        "weight_display",
        "status",
        "decided_by",
    ]
    list_filter = ["status", "rule", "created_at"]
    list_select_related = ["left", "right"]
    search_fields = ["=left__master_id", "=right__master_id"]
    ordering = ["created_at", "id"]
    actions = ["merge_selected", "not_a_match_selected", "skip_selected"]
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[MatchCandidate]:
        return super().get_queryset(request).select_related("left", "right")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The queue opens on what is left to review.
        if not request.GET and request.method == "GET":
            return HttpResponseRedirect(request.path + "?status__exact=open")
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("customers.merge_individual")

    @admin.display(description="record", ordering="left__last_name")
    def left_record(self, obj: MatchCandidate) -> str:
        return obj.left.person_name or obj.left.master_id

    @admin.display(description="possible duplicate", ordering="right__last_name")
    def right_record(self, obj: MatchCandidate) -> str:
        return obj.right.person_name or obj.right.master_id

    @admin.display(description="agreement (0-1)", ordering="score")
    def score_display(self, obj: MatchCandidate) -> str:
        # The rule's score is the mean similarity of its criteria: say so, "1.00" alone reads as a count.
        return format_html('<span title="{}">{} of 1</span>', SCORE_MEANING, f"{obj.score:.2f}")

    @admin.display(description="match weight")
    def weight_display(self, obj: MatchCandidate) -> str:
        """The weight the matcher model gave the pair, its version, and (on hover) the parts that weighed most."""
        summary = weight_parts(obj.comparison)
        if summary is None:
            return "–"
        strongest = sorted(summary["rows"], key=lambda row: -abs(row["weight"]))[:3]
        title = "; ".join(f"{row['attribute']}: {row['level']} {row['weight']:+.1f}" for row in strongest)
        return format_html(
            '<span class="match-weight" title="{}">{} bits (model v{})</span>',
            title,
            f"{summary['weight']:.1f}",
            summary["model_version"],
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        candidate = self.get_object(request, object_id)
        if candidate is None or not self.has_view_permission(request, candidate):
            raise PermissionDenied
        if request.method == "POST":
            return self._decide(request, candidate)
        comparison = compare_records(candidate.left, candidate.right)
        return TemplateResponse(
            request,
            "admin/customers/matchcandidate/review.html",
            {
                **self.admin_site.each_context(request),
                "title": "Review a possible duplicate",
                "candidate": candidate,
                "comparison": comparison,
                "weights": weight_summary(candidate.comparison),
                "can_decide": self.has_decide_permission(request) and candidate.status == CandidateStatus.OPEN,
                "remaining": MatchCandidate.objects.filter(status=CandidateStatus.OPEN).count(),
                "next_pair": self._next_open(candidate),
                "queue_url": reverse("admin:customers_matchcandidate_changelist") + "?status__exact=open",
                "opts": self.model._meta,
                "original": candidate,
            },
        )

    @staticmethod
    def _next_open(candidate: MatchCandidate) -> MatchCandidate | None:
        """The open pair after this one in the queue's order, else the first other open pair."""
        others = MatchCandidate.objects.filter(status=CandidateStatus.OPEN).exclude(pk=candidate.pk)
        later = others.filter(
            Q(created_at__gt=candidate.created_at) | Q(created_at=candidate.created_at, id__gt=candidate.id)
        )
        return later.order_by("created_at", "id").first() or others.order_by("created_at", "id").first()

    def _decide(self, request: HttpRequest, candidate: MatchCandidate) -> HttpResponse:
        if not self.has_decide_permission(request):
            raise PermissionDenied
        decision = request.POST.get("decision")
        try:
            if candidate.status != CandidateStatus.OPEN:
                raise ResolutionError("this pair was already decided")
            if decision == "merge":
                survivor = merge_individuals(
                    candidate.left,
                    candidate.right,
                    actor=actor_of(request),
                    actor_user=request.user,
                    rule=f"steward (suspect: {candidate.rule})",
                    candidate=candidate,
                )
                messages.success(request, f"Merged into {survivor.master_id}.")
            elif decision == "not_a_match":
                mark_not_a_match(candidate.left, candidate.right, actor=actor_of(request), actor_user=request.user)
                messages.success(request, "Marked not a match: the pair will not be proposed again.")
            elif decision == "skip":
                skip_candidate(candidate, actor=actor_of(request))
                messages.info(request, "Skipped.")
            else:
                raise ResolutionError("unknown decision")
        except ResolutionError as exc:
            messages.error(request, str(exc))
        following = MatchCandidate.objects.filter(status=CandidateStatus.OPEN).order_by("created_at", "id").first()
        if following is None:
            return HttpResponseRedirect(reverse("admin:customers_matchcandidate_changelist"))
        return HttpResponseRedirect(reverse("admin:customers_matchcandidate_change", args=[following.pk]))

    # -- bulk actions for obvious cases ----------------------------------------------------------
    def _each_open(self, request: HttpRequest, queryset: QuerySet[MatchCandidate], work: Any, verb: str) -> None:
        done, failed = 0, 0
        for candidate in queryset.filter(status=CandidateStatus.OPEN).select_related("left", "right")[:200]:
            try:
                work(candidate)
                done += 1
            except ResolutionError:
                failed += 1  # e.g. one side was merged by an earlier pair of this selection
        self.message_user(request, f"{verb} {done} pair(s)" + (f"; {failed} no longer possible." if failed else "."))

    @admin.action(description="Merge selected pairs", permissions=["decide"])
    def merge_selected(self, request: HttpRequest, queryset: QuerySet[MatchCandidate]) -> None:
        def work(c: MatchCandidate) -> None:
            merge_individuals(
                c.left,
                c.right,
                actor=actor_of(request),
                actor_user=request.user,
                rule=f"steward bulk ({c.rule})",
                candidate=c,
            )

        self._each_open(request, queryset, work, "Merged")

    @admin.action(description="Not a match: selected pairs", permissions=["decide"])
    def not_a_match_selected(self, request: HttpRequest, queryset: QuerySet[MatchCandidate]) -> None:
        self._each_open(
            request,
            queryset,
            lambda c: mark_not_a_match(c.left, c.right, actor=actor_of(request), actor_user=request.user),
            "Marked not a match:",
        )

    @admin.action(description="Skip selected pairs", permissions=["decide"])
    def skip_selected(self, request: HttpRequest, queryset: QuerySet[MatchCandidate]) -> None:
        self._each_open(request, queryset, lambda c: skip_candidate(c, actor=actor_of(request)), "Skipped")
