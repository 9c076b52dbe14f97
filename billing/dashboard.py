"""The admin index as a dashboard (SPEC §7): each figure, when it was measured, and a link to its rows.

Cheap at a million customers: the drift, over-limit and stale-period figures come from the last report
over every customer (its run row), the rest from small indexed queries; nothing scans a table per load.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from billing.models import WebhookEvent
from billing.selectors import last_full_run
from usage.selectors import trigger_health


@dataclass
class Figure:
    label: str
    value: int | None  # None: not measured yet
    link: str
    measured: str  # when / from what
    bad: bool = False


def dashboard_figures() -> dict:
    now = timezone.now()
    customers = reverse("admin:usage_customer_changelist")
    run = last_full_run()
    found = (run.summary or {}).get("findings", {}) if run else {}
    when = (
        f"last full {run.get_mode_display().lower()} #{run.pk}"
        if run
        else "no report over every customer yet"
    )
    failed = WebhookEvent.objects.filter(
        status=WebhookEvent.Status.FAILED, received_at__gte=now - timedelta(hours=24)
    ).count()  # the partial index webhook_events_failed: failed rows only
    health = trigger_health()
    problems = [s for s in health if not s.ok]
    figures = [
        Figure(
            "customers with drift",
            run.customers_with_drift if run else None,
            f"{customers}?drift=last",
            when,
            bool(run and run.customers_with_drift),
        ),
        Figure(
            "customers over a limit",
            found.get("over_limit") if run else None,
            f"{customers}?over=yes",
            when,
            bool(found.get("over_limit")),
        ),
        Figure(
            "stale periods (ended without a rollover)",
            found.get("stale_period") if run else None,
            f"{customers}?stale=yes",
            when,
            bool(found.get("stale_period")),
        ),
        Figure(
            "failed webhooks in the last 24 h",
            failed,
            reverse("admin:billing_webhookevent_changelist") + "?status__exact=failed",
            "now",
            bool(failed),
        ),
        Figure(
            "unhealthy triggers and functions",
            len(problems),
            reverse("admin:index") + "#trigger-health",
            f"now, {len(health)} checked (manage.py check_triggers)",
            bool(problems),
        ),
    ]
    return {
        "figures": figures,
        "run": run,
        "run_link": reverse("admin:usage_reconciliationrun_change", args=[run.pk]) if run else None,
        "run_age": _age(run.started_at, now) if run else None,
        "trigger_problems": problems,
    }


def _age(then, now) -> str:
    """ "just now" under a minute (Django's timesince says "0 minutes"), else "3 hours, 5 minutes ago"."""
    if now - then < timedelta(minutes=1):
        return "just now"
    return f"{timesince(then, now)} ago"
