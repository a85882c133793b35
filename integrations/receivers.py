"""Receivers for the MDM domain's signals (customers never imports integrations)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from customers.signals import resync_requested


@receiver(resync_requested)
def queue_resync(sender: Any, individual: Any, actor: str, **kwargs: Any) -> None:
    from integrations.process import start_resync

    start_resync(individual, actor=actor)
