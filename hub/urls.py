from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from integrations import dashboard
from integrations.api.views import EventsView, HealthView, LiveView, ReadyView, SyncRunDetailView
from integrations.marketing_cloud import activity
from integrations.marketing_cloud.ens import EnsCallbackView
from integrations.marketing_cloud.views import JourneyExecuteView
from integrations.metrics import metrics_view

journey_activity = [
    path("config.json", activity.config_json, name="mc-activity-config"),
    path("index.html", activity.configuration_page, name="mc-activity-page"),
    path("", activity.configuration_page, name="mc-activity-root"),
    path("icon.svg", activity.icon, name="mc-activity-icon"),
    path("<str:action>", activity.lifecycle, name="mc-activity-lifecycle"),
]

api_v1 = [
    path("marketing-cloud/journey/execute", JourneyExecuteView.as_view(), name="mc-journey-execute"),
    path("marketing-cloud/journey/", include(journey_activity)),
    path("marketing-cloud/ens", EnsCallbackView.as_view(), name="mc-ens"),
    path("events", EventsView.as_view(), name="events"),
    path("sync-runs/<int:pk>", SyncRunDetailView.as_view(), name="sync-run-detail"),
    path("", include("customers.api.urls")),
]

urlpatterns = [
    path("admin/dashboard/", admin.site.admin_view(dashboard.dashboard_view), name="admin-dashboard"),
    path(
        "admin/dashboard/replay/<int:pk>/",
        admin.site.admin_view(dashboard.replay_view),
        name="admin-dashboard-replay",
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/health", HealthView.as_view(), name="health"),
    path("api/health/live", LiveView.as_view(), name="health-live"),
    path("api/health/ready", ReadyView.as_view(), name="health-ready"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
]
