from django.urls import path

from customers.api.stewardship import (
    CandidateListView,
    HistoryView,
    MergeView,
    NotAMatchView,
    PinView,
    SourcesView,
    UnmergeView,
)
from customers.api.views import IndividualDetailView, IndividualErasureView, IndividualListView

urlpatterns = [
    path("individuals", IndividualListView.as_view(), name="individual-list"),
    path("individuals/<str:master_id>", IndividualDetailView.as_view(), name="individual-detail"),
    path("individuals/<str:master_id>/erasure", IndividualErasureView.as_view(), name="individual-erasure"),
    path("individuals/<str:master_id>/sources", SourcesView.as_view(), name="individual-sources"),
    path("individuals/<str:master_id>/history", HistoryView.as_view(), name="individual-history"),
    path("individuals/<str:master_id>/merge", MergeView.as_view(), name="individual-merge"),
    path("individuals/<str:master_id>/unmerge", UnmergeView.as_view(), name="individual-unmerge"),
    path("individuals/<str:master_id>/not-a-match", NotAMatchView.as_view(), name="individual-not-a-match"),
    path("individuals/<str:master_id>/pins/<str:attribute>", PinView.as_view(), name="individual-pin"),
    path("match-candidates", CandidateListView.as_view(), name="match-candidate-list"),
]
