"""The two roles of the steward workspace: "Data steward" and "Viewer" (groups, made by a migration).

Viewer: every view permission of the hub's apps (a read-only admin).
Data steward: that, plus what reviewing and fixing records needs: edit golden records
(kept as the steward's own source), merge/unmerge/not-a-match, pins, re-sync, match
and survivorship rules, replaying dead letters and deliveries, running the
reconciliation, closing a breaker, pausing and resuming downstream targets. Erasure (GDPR),
API keys and a downstream target's URL and signing secret stay with admins (superusers).
"""

from __future__ import annotations

from typing import Any

STEWARD = "Data steward"
VIEWER = "Viewer"
APPS = ("customers", "integrations", "marketing_cloud", "downstream")
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
    ("integrations", "change_deadletter"),
    ("integrations", "change_connectorstate"),
    ("marketing_cloud", "change_reconciliationstate"),
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
