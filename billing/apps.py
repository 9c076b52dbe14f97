from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from django.conf import settings

        # Receivers and system checks register on import: after migrate (billing/signals.py), and
        # the trigger-health check (billing/checks.py).
        from billing import checks, signals  # noqa: F401

        if settings.DATABASES["default"]["ENGINE"] == "billing.db.embedded":
            from billing.db.embedded.base import exit_cleanly_on_termination

            exit_cleanly_on_termination(settings.DATABASES["default"]["PGDATA"])
