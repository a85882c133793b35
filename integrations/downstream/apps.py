from django.apps import AppConfig


class DownstreamConfig(AppConfig):
    name = "integrations.downstream"
    label = "downstream"
    verbose_name = "Downstream systems"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the receivers; importable only once the apps are loaded (they import models).
        from integrations.downstream import receivers  # noqa: F401
