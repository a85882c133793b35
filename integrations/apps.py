from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

from hub.runtime import tune_garbage_collector


def ensure_resolver_sweep(**kwargs: Any) -> None:
    """Seed the resolver's sweep (every minute), idempotently by name, on post_migrate.

    The sweep wakes the resolver when events are ready and no wake-up reached the cluster
    (a wake-up lost with a dying worker); a flushed or restored database gets it back at
    the next migrate.
    """
    # Django imports apps.py while it loads the apps, before any model may be imported: models
    # (and what imports them) are imported when the signal fires, receivers in ready().
    from django_q.models import Schedule

    from integrations.resolver import SWEEP_SCHEDULE, SWEEP_TASK

    Schedule.objects.get_or_create(
        name=SWEEP_SCHEDULE,
        defaults={"func": SWEEP_TASK, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations and sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from integrations import receivers  # noqa: F401  (connects customers' signals)

        post_migrate.connect(ensure_resolver_sweep, sender=self)
        tune_garbage_collector()
