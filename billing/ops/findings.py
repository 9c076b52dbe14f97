"""Findings for the discrepancy report and the diagnosis (SPEC §6): not counter drift, but wrong all
the same. ``findings()`` composes them: trigger health, over limit, stale periods, failed webhooks.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection

from billing.ops.checks import trigger_health
from usage.metrics import ACTIVE_PROJECTS
from usage.metrics import BY_CODE as METRICS_BY_CODE
from usage.numbers import number_plain


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


# The live plan (billing_live_plan) and each metric's allowance (billing_plan_allowance, through the
# catalogue usage_metrics()): the same definitions billing_consume uses.
_OVER_LIMIT = """
SELECT c.id, c.email, pl.name, m.code, u.used, u.allowance
FROM customers c
CROSS JOIN LATERAL billing_live_plan(c.id) AS lp
JOIN plans pl ON pl.id = lp.plan_id
JOIN usage_tracking t ON t.customer_id = c.id AND usage_period_current(t.period_start, t.period_end)
LEFT JOIN LATERAL (  -- metered usage beyond the allowance that overage credit paid for is not over
    SELECT jsonb_object_agg(per.metric, per.drawn) AS drawn FROM (
        SELECT g.metric, sum(d.quantity) AS drawn
        FROM credit_draws d JOIN credit_grants g ON g.id = d.grant_id
        WHERE d.customer_id = c.id AND d.kind = 'usage'  -- a refund's take-back paid for no usage
          AND d.drawn_at >= t.period_start AND d.drawn_at < t.period_end
        GROUP BY g.metric
    ) AS per
) AS credited ON true
CROSS JOIN usage_metrics() AS m
CROSS JOIN LATERAL (
    SELECT (to_jsonb(t) ->> m.counter)::numeric AS used,
           billing_plan_allowance(pl, m.code) + coalesce((credited.drawn ->> m.code)::numeric, 0) AS allowance
) AS u
WHERE u.allowance IS NOT NULL AND u.used > u.allowance {scope}
ORDER BY u.used / nullif(u.allowance, 0) DESC NULLS FIRST
"""

_STALE_PERIOD = """
SELECT c.id, c.email, 'customer' AS what, c.current_period_end
FROM customers c WHERE c.current_period_end <= now() {scope}
UNION ALL
SELECT c.id, c.email, s.processor || ' subscription', s.current_period_end
FROM customers c
CROSS JOIN LATERAL billing_live_plan(c.id) AS lp
JOIN subscriptions s ON s.id = lp.subscription_id
WHERE s.current_period_end <= now() {scope}
"""


def _scope(customer_ids):
    if customer_ids is None:
        return "", {}
    return "AND c.id = ANY(%(ids)s::uuid[])", {"ids": [str(i) for i in customer_ids]}


def over_limit(customer_ids=None):
    scope, params = _scope(customer_ids)
    with connection.cursor() as cursor:
        cursor.execute(_OVER_LIMIT.format(scope=scope), params)
        for customer_id, email, plan, code, used, allowance in cursor.fetchall():
            used_n, allowance_n = number_plain(used), number_plain(allowance)
            percent = f"{used / allowance * 100:.0f} %" if allowance else "no allowance"
            metric = METRICS_BY_CODE[code]
            fix = (
                f"archive {used_n - allowance_n} project(s) or move to a bigger plan"
                if metric is ACTIVE_PROJECTS
                else "sell an overage pack or move to a bigger plan"
            )
            yield Finding(
                "over_limit",
                str(customer_id),
                email,
                None,
                f"{used_n} / {allowance_n} {metric.label} ({percent}) on {plan}",
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
