from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from pathlib import Path

        from django.conf import settings

        from billing import signals  # noqa: F401  (installs billing's SQL functions after migrate)
        from billing.services import audit, credits, findings  # noqa: F401  (audit connects its receivers)
        from usage.selectors import SQL_DIRS
        from usage.services.integrity import finding_provider_register

        billing_sql = Path(__file__).resolve().parent / "sql"
        if billing_sql not in SQL_DIRS:
            SQL_DIRS.append(billing_sql)
        credits.credit_checks_register()

        finding_provider_register("over_limit", findings.over_limit)
        finding_provider_register("stale_period", findings.stale_period)
        finding_provider_register("failed_webhook", findings.failed_webhook)

        if settings.DATABASES["default"]["ENGINE"] == "billing.db.embedded":
            from billing.db.embedded.base import exit_cleanly_on_termination

            exit_cleanly_on_termination()
