from django.urls import path

from customers.api.views import IndividualDetailView, IndividualErasureView, IndividualListView

urlpatterns = [
    path("individuals", IndividualListView.as_view(), name="individual-list"),
    path("individuals/<str:master_id>", IndividualDetailView.as_view(), name="individual-detail"),
    path("individuals/<str:master_id>/erasure", IndividualErasureView.as_view(), name="individual-erasure"),
]
