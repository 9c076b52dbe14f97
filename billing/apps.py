from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from django.conf import settings

        if settings.DATABASES["default"]["ENGINE"] == "billing.db.embedded":
            from billing.db.embedded.base import exit_cleanly_on_termination

            exit_cleanly_on_termination()
