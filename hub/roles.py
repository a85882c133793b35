"""The two roles of the steward workspace: "Data steward" and "Viewer" (groups, made by a migration).

Viewer: every view permission of the hub's apps (a read-only admin).
Data steward: that, plus what reviewing and fixing records needs: edit golden records
(kept as the steward's own source), merge/unmerge/not-a-match, pins, re-sync, match
and survivorship rules, activating a matcher model, replaying dead letters and deliveries, running the
reconciliation and the subscriber status read, retrying unsubscribes sent to Marketing Cloud,
closing a breaker, pausing and resuming downstream targets. Erasure (GDPR) and retrying its
Marketing Cloud contact deletions, API keys and a downstream target's URL and signing secret
stay with admins (superusers).
Both roles may read the configuration change log.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions

STEWARD = "Data steward"
VIEWER = "Viewer"
# The apps whose records both roles may view ("auditlog": the configuration change log).
APPS = ("customers", "integrations", "marketing_cloud", "downstream", "auditlog")
STEWARD_EXTRA = [
    ("customers", "change_individual"),
    ("customers", "merge_individual"),
    ("customers", "pin_individual"),
    ("customers", "resync_individual"),
    ("customers", "change_crossreference"),
    ("customers", "change_matchcandidate"),
    ("customers", "add_matchrule"),
    ("customers", "change_matchrule"),
    ("customers", "change_survivorshiprule"),
    ("customers", "change_matchermodel"),
    ("integrations", "change_deadletter"),
    ("integrations", "change_connectorstate"),
    ("marketing_cloud", "change_reconciliationstate"),
    ("marketing_cloud", "change_subscriberstatussync"),
    ("marketing_cloud", "change_unsubscribewriteback"),
    ("downstream", "change_downstreamtarget"),
    ("downstream", "change_delivery"),
]


def ensure_roles(group_model: Any, permission_model: Any) -> None:
    """Create or refresh both groups (models passed in so a migration can call it)."""
    views = permission_model.objects.filter(content_type__app_label__in=APPS, codename__startswith="view_")
    viewer, _ = group_model.objects.get_or_create(name=VIEWER)
    viewer.permissions.set(views)
    steward, _ = group_model.objects.get_or_create(name=STEWARD)
    extra = permission_model.objects.none()
    for app, codename in STEWARD_EXTRA:
        extra = extra | permission_model.objects.filter(content_type__app_label=app, codename=codename)
    steward.permissions.set([*views, *extra])


def ensure_roles_in_migration(apps: Any) -> None:
    """``ensure_roles`` from a migration (permissions are made after all migrations; the groups need them now)."""
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    ensure_roles(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))
