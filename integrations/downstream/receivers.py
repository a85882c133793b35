"""Queue the fan-out when the MDM domain records a change (same transaction as the change); a deleted
target takes its breaker state and its Salesforce token with it."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete
from django.dispatch import receiver

from customers.signals import change_recorded
from integrations.downstream.delivery import queue_fan_out
from integrations.downstream.models import DownstreamTarget
from integrations.models import AccessToken, ConnectorState
from integrations.salesforce.client import token_system


@receiver(change_recorded)
def queue_fan_out_for_change(sender: Any, change_event: Any = None, **kwargs: Any) -> None:
    if DownstreamTarget.objects.filter(enabled=True).exists():
        queue_fan_out()


@receiver(post_delete, sender=DownstreamTarget)
def forget_deleted_target(sender: Any, instance: DownstreamTarget, **kwargs: Any) -> None:
    ConnectorState.objects.filter(system=DownstreamTarget.breaker_key(instance.pk)).delete()
    AccessToken.objects.filter(system=token_system(str(instance.pk))).delete()
