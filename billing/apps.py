from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from django.conf import settings

        from billing.services import audit, findings  # noqa: F401  (audit connects its receivers)
        from usage.services.integrity import finding_provider_register

        finding_provider_register("over_limit", findings.over_limit)
        finding_provider_register("stale_period", findings.stale_period)

        if settings.DATABASES["default"]["ENGINE"] == "billing.db.embedded":
            from billing.db.embedded.base import exit_cleanly_on_termination

            exit_cleanly_on_termination()
