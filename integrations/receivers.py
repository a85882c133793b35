"""Receivers for the MDM domain's signals (customers never imports integrations)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.dispatch import receiver

from customers.choices import WritebackState
from customers.models import CrossReference
from customers.signals import (
    cross_reference_unmerged,
    golden_records_merged,
    individual_erased,
    resync_requested,
)
from customers.writeback_state import request_writeback
from integrations.choices import MARKETING_CLOUD
from integrations.marketing_cloud.models import EnsNotification
from integrations.marketing_cloud.writeback import queue_flush
from integrations.models import DeadLetter, InboundEvent
from integrations.replay import start_resync


@receiver(resync_requested)
def queue_resync(sender: Any, individual: Any, actor: str, **kwargs: Any) -> None:
    start_resync(individual, actor=actor)


@receiver(individual_erased)
def scrub_integration_stores(
    sender: Any, individual: Any, source_records: list[tuple[str, str]], actor: str, **kwargs: Any
) -> None:
    """Personal data the sync machinery keeps about the person goes too; the source systems are told."""

    if source_records:
        match = Q()
        for system, external_id in source_records:
            match |= Q(system=system, external_id=external_id)
        events = InboundEvent.objects.filter(match)
        DeadLetter.objects.filter(event__in=events).update(original_event={"erased": True})
        events.update(raw_body=b"", payload=None, individual_cim=None, headers={}, reason="(erased)")
    EnsNotification.objects.filter(master_id=individual.master_id).update(payload={"erased": True}, email_address="")
    # Marketing Cloud is told by clearing the master ID it holds (see the write-back).
    told = CrossReference.objects.filter(individual=individual, system=MARKETING_CLOUD).values_list("pk", flat=True)
    if request_writeback(list(told)):
        queue_flush()


def _queue_master_id_writeback(individual: Any, **filters: Any) -> int:
    """Marketing Cloud records of ``individual`` holding another master ID get the current one written."""

    stale = (
        CrossReference.objects.filter(individual=individual, system=MARKETING_CLOUD, status="VALID", **filters)
        .exclude(source_master_id=individual.master_id, writeback_state=WritebackState.WRITTEN)
        .values_list("pk", flat=True)
    )
    count = request_writeback(list(stale))
    if count:
        queue_flush()
    return count


@receiver(golden_records_merged)
def write_back_survivor(sender: Any, survivor: Any, retired: Any, actor: str, **kwargs: Any) -> None:
    """After a merge, every Marketing Cloud record of the person gets the surviving master ID."""
    _queue_master_id_writeback(survivor)


@receiver(cross_reference_unmerged)
def write_back_split(sender: Any, cross_reference: Any, original: Any, split: Any, actor: str, **kwargs: Any) -> None:
    """A source record split off into its own golden record gets the new master ID."""
    _queue_master_id_writeback(split, pk=cross_reference.pk)
