"""Findings for the discrepancy report and the diagnosis (SPEC §6): not counter drift, but wrong all
the same. ``findings()`` composes them: trigger health, over limit, stale periods, failed webhooks.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection

from billing.ops.checks import trigger_health


@dataclass
class Finding:
    """Something wrong that is not counter drift: over a limit, a stale period, a broken trigger."""

    check: str
    customer_id: str | None
    email: str | None
    target_id: str | None
    detail: str
    fix: str = ""

    def as_dict(self):
        return {k: getattr(self, k) for k in ("check", "customer_id", "email", "target_id", "detail", "fix")}


def findings(customer_ids=None) -> list[Finding]:
    """Every finding in scope (None: every customer), in this order."""
    return [
        *unhealthy_triggers(),
        *over_limit(customer_ids),
        *stale_period(customer_ids),
        *failed_webhook(customer_ids),
    ]


def unhealthy_triggers() -> Iterator[Finding]:
    """Database-wide, so listed whatever the scope."""
    for status in trigger_health():
        if not status.ok:
            yield Finding(
                "trigger_health",
                None,
                None,
                status.name,
                f"{status.kind} {status.name}: {status.problem}",
                "manage.py migrate, then manage.py check_triggers",
            )


# Customers without a live subscription count as Free (billing.selectors.DEFAULT_PLAN_CODE).
_OVER_LIMIT = """
WITH live AS (
    SELECT DISTINCT ON (customer_id) customer_id, plan_id FROM subscriptions
    WHERE status <> 'canceled' ORDER BY customer_id, created_at DESC
)
SELECT c.id, c.email, pl.name, metric, used, allowance
FROM customers c
LEFT JOIN live s ON s.customer_id = c.id
JOIN plans pl ON pl.id = coalesce(s.plan_id, (SELECT id FROM plans WHERE code = 'free'))
JOIN usage_tracking t ON t.customer_id = c.id AND t.period_start <= now() AND t.period_end > now()
LEFT JOIN LATERAL (  -- metered usage beyond the allowance that overage credit paid for is not over
    SELECT coalesce(sum(d.quantity) FILTER (WHERE g.metric = 'ai_interaction'), 0) AS ai,
           coalesce(sum(d.quantity) FILTER (WHERE g.metric = 'minutes'), 0) AS minutes
    FROM credit_draws d JOIN credit_grants g ON g.id = d.grant_id
    WHERE d.customer_id = c.id AND d.drawn_at >= t.period_start AND d.drawn_at < t.period_end
) AS credited ON true
CROSS JOIN LATERAL (VALUES
    ('active projects', t.active_projects_count::numeric, pl.max_active_projects::numeric),
    ('AI interactions', t.ai_interactions_count, pl.ai_interactions_per_period + credited.ai),
    ('transcription minutes', t.minutes_used, pl.minutes_per_period + credited.minutes)
) AS m(metric, used, allowance)
WHERE allowance IS NOT NULL AND used > allowance {scope}
ORDER BY used / nullif(allowance, 0) DESC NULLS FIRST
"""

_STALE_PERIOD = """
SELECT c.id, c.email, 'customer' AS what, c.current_period_end
FROM customers c WHERE c.current_period_end <= now() {scope}
UNION ALL
SELECT c.id, c.email, s.processor || ' subscription', s.current_period_end
FROM subscriptions s JOIN customers c ON c.id = s.customer_id
WHERE s.status <> 'canceled' AND s.current_period_end <= now() {scope}
"""


def _scope(customer_ids):
    if customer_ids is None:
        return "", {}
    return "AND c.id = ANY(%(ids)s::uuid[])", {"ids": [str(i) for i in customer_ids]}


def over_limit(customer_ids=None):
    scope, params = _scope(customer_ids)
    with connection.cursor() as cursor:
        cursor.execute(_OVER_LIMIT.format(scope=scope), params)
        for customer_id, email, plan, metric, used, allowance in cursor.fetchall():
            used_n, allowance_n = _n(used), _n(allowance)
            percent = f"{used / allowance * 100:.0f} %" if allowance else "no allowance"
            fix = (
                f"archive {used_n - allowance_n} project(s) or move to a bigger plan"
                if metric == "active projects"
                else "sell an overage pack or move to a bigger plan"
            )
            yield Finding(
                "over_limit",
                str(customer_id),
                email,
                None,
                f"{used_n} / {allowance_n} {metric} ({percent}) on {plan}",
                fix,
            )


def stale_period(customer_ids=None):
    scope, params = _scope(customer_ids)
    with connection.cursor() as cursor:
        cursor.execute(_STALE_PERIOD.format(scope=scope), params)
        for customer_id, email, what, ended in cursor.fetchall():
            yield Finding(
                "stale_period",
                str(customer_id),
                email,
                None,
                f"{what} period ended {ended:%Y-%m-%d %H:%M} UTC without a rollover",
                "manage.py roll_usage_periods (or the processor's renewal webhook)",
            )


_FAILED_WEBHOOKS = """
SELECT w.customer_id, c.email, w.processor, w.event_type, w.event_id, w.received_at, w.error
FROM webhook_events w LEFT JOIN customers c ON c.id = w.customer_id
WHERE w.status = 'failed' AND (NOT w.retry_expected OR w.received_at < now() - interval '3 days') {scope}
ORDER BY w.received_at
"""


def failed_webhook(customer_ids=None):
    """Events we could not apply and that need a person: the processor thinks they are done.

    An event that failed for something not there yet was answered non-2xx, so the processor delivers
    it again (Stripe and Paddle retry for about three days): a person is needed only once it stops.
    """
    if customer_ids is None:
        scope, params = "", {}
    else:
        scope, params = "AND w.customer_id = ANY(%(ids)s::uuid[])", {"ids": [str(i) for i in customer_ids]}
    with connection.cursor() as cursor:
        cursor.execute(_FAILED_WEBHOOKS.format(scope=scope), params)
        for customer_id, email, processor, event_type, event_id, received, error in cursor.fetchall():
            yield Finding(
                "failed_webhook",
                str(customer_id) if customer_id else None,
                email,
                event_id,
                f"{processor} {event_type} received {received:%Y-%m-%d %H:%M} UTC failed: {error}",
                "fix the cause, then replay it: admin > Webhook events > Replay selected failed events",
            )


def _n(value):
    return int(value) if value == int(value) else float(value)
