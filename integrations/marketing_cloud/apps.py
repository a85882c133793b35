from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_reconciliation_schedule(**kwargs: Any) -> None:
    """Seed the poller's and the status read's django-q2 schedules (every 15 minutes), idempotently by name.

    On post_migrate rather than in a data migration, so a database that was flushed
    (tests) or restored without it gets it back at the next migrate.
    """
    # Models may not be imported while Django loads the apps (it imports this module then).
    from django_q.models import Schedule

    from integrations.marketing_cloud.poller import POLL_TASK, SCHEDULE_NAME
    from integrations.marketing_cloud.status_sync import STATUS_SCHEDULE_NAME, STATUS_TASK

    Schedule.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={"func": POLL_TASK, "schedule_type": Schedule.MINUTES, "minutes": 15, "repeats": -1},
    )
    # The subscriber statuses are read on the same interval (manage.py mc_reconcile runs both).
    Schedule.objects.get_or_create(
        name=STATUS_SCHEDULE_NAME,
        defaults={"func": STATUS_TASK, "schedule_type": Schedule.MINUTES, "minutes": 15, "repeats": -1},
    )


class MarketingCloudConfig(AppConfig):
    name = "integrations.marketing_cloud"
    label = "marketing_cloud"
    verbose_name = "Salesforce Marketing Cloud"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Receivers of customers' signals: opt-outs told to Marketing Cloud, erasures deleting contacts.
        from integrations.marketing_cloud import erasure, unsubscribe  # noqa: F401

        post_migrate.connect(ensure_reconciliation_schedule, sender=self)
