"""Queue the fan-out when the MDM domain records a change (same transaction as the change)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from customers.signals import change_recorded
from integrations.downstream.delivery import queue_fan_out
from integrations.downstream.models import DownstreamTarget


@receiver(change_recorded)
def queue_fan_out_for_change(sender: Any, change_event: Any = None, **kwargs: Any) -> None:
    if DownstreamTarget.objects.filter(enabled=True).exists():
        queue_fan_out()
