from django.apps import AppConfig


class MarketingCloudConfig(AppConfig):
    name = "integrations.marketing_cloud"
    label = "marketing_cloud"
    verbose_name = "Salesforce Marketing Cloud"
    default_auto_field = "django.db.models.BigAutoField"
