from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_reconciliation_schedule(**kwargs: Any) -> None:
    """Seed the poller's django-q2 schedule (every 15 minutes), idempotently by name.

    On post_migrate rather than in a data migration, so a database that was flushed
    (tests) or restored without it gets it back at the next migrate.
    """
    # Models may not be imported while Django loads the apps (it imports this module then).
    from django_q.models import Schedule

    from integrations.marketing_cloud.poller import POLL_TASK, SCHEDULE_NAME

    Schedule.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={"func": POLL_TASK, "schedule_type": Schedule.MINUTES, "minutes": 15, "repeats": -1},
    )


class MarketingCloudConfig(AppConfig):
    name = "integrations.marketing_cloud"
    label = "marketing_cloud"
    verbose_name = "Salesforce Marketing Cloud"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(ensure_reconciliation_schedule, sender=self)
