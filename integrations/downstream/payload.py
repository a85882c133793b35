"""What a delivery carries: the CIM Individual as right after the change, in the webhook body."""

from __future__ import annotations

from typing import Any

from customers.cim import render_individual
from customers.models import ChangeEvent, Individual


def individual_of(change: ChangeEvent) -> dict[str, Any] | None:
    """The CIM Individual as right after the change (None when the record is gone)."""
    if change.snapshot is not None:
        return change.snapshot
    # Bulk imports record no snapshot: render the record now.
    record = (
        Individual.objects.prefetch_related("contact_points", "cross_references", "subscription_consents")
        .filter(master_id=change.master_id)
        .first()
    )
    return render_individual(record) if record else None


def event_body(change: ChangeEvent) -> dict[str, Any]:
    """The webhook payload: the CIM Individual (as right after the change) plus the change."""
    return {
        "type": f"customer.{change.change_type}",
        "timestamp": change.created_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "masterId": change.master_id,
            "changeId": change.pk,
            "change": change.change,
            "individual": individual_of(change),
        },
    }
