"""The admin index as a dashboard (SPEC §7): each figure, when it was measured, and a link to its rows.

Cheap at a million customers: the drift figure comes from the last run over every customer (report or
reconciliation), the over-limit and stale-period figures from the last report over every customer (a
reconciliation fixes counters and measures no findings), each saying which run and when; the rest
from small indexed queries; nothing scans a table per load.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from billing.models import WebhookEvent
from billing.selectors import last_full_report, last_full_run
from usage.models import ReconciliationRow
from usage.selectors import trigger_health


@dataclass
class Figure:
    label: str
    value: int | None  # None: not measured yet
    link: str
    measured: str  # when / from what
    bad: bool = False
    measured_link: str = ""  # the run it was read from
    measured_age: str = ""  # how long ago that run started


def _from_run(run, now) -> dict:
    """Figure's measured / measured_link / measured_age for a figure read from ``run``."""
    if run is None:
        return {"measured": "no report over every customer yet"}
    return {
        "measured": f"last full {'report' if run.mode == run.Mode.REPORT else 'reconciliation'} #{run.pk}",
        "measured_link": reverse("admin:usage_reconciliationrun_change", args=[run.pk]),
        "measured_age": _age(run.started_at, now),
    }


def dashboard_figures() -> dict:
    now = timezone.now()
    customers = reverse("admin:usage_customer_changelist")
    run = last_full_run()
    # The findings' last measure: after a reconciliation (which records none) it is the report before.
    report = run if run is not None and run.mode == run.Mode.REPORT else last_full_report()
    if run is None or run is report:
        drifted = run.customers_with_drift if run else None
    else:  # a reconciliation: the customers whose drift it left (its drift filter's rows), not it fixed
        drifted = (
            ReconciliationRow.objects.filter(run=run, fixed=False).values("customer_id").distinct().count()
        )
    found = (report.summary or {}).get("findings", {}) if report else {}
    failed = WebhookEvent.objects.filter(
        status=WebhookEvent.Status.FAILED, received_at__gte=now - timedelta(hours=24)
    ).count()  # the partial index webhook_events_failed: failed rows only
    health = trigger_health()
    problems = [s for s in health if not s.ok]
    figures = [
        Figure(
            "customers with drift",
            drifted,
            f"{customers}?drift=last",
            bad=bool(drifted),
            **_from_run(run, now),
        ),
        Figure(
            "customers over a limit",
            found.get("over_limit"),
            f"{customers}?over=yes",
            bad=bool(found.get("over_limit")),
            **_from_run(report, now),
        ),
        Figure(
            "stale periods (ended without a rollover)",
            found.get("stale_period"),
            f"{customers}?stale=yes",
            bad=bool(found.get("stale_period")),
            **_from_run(report, now),
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
    return {"figures": figures, "trigger_problems": problems}


def _age(then, now) -> str:
    """ "just now" under a minute (Django's timesince says "0 minutes"), else "3 hours, 5 minutes ago"."""
    if now - then < timedelta(minutes=1):
        return "just now"
    return f"{timesince(then, now)} ago"
