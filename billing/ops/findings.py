"""Findings for the discrepancy report and the diagnosis (SPEC §6): not counter drift, but wrong all
the same. ``findings()`` composes them: trigger health, over limit, stale periods, failed webhooks.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection

from billing.ops.checks import trigger_health
from billing.selectors import OVER_LIMIT_AFTER_SCAN_SQL, OVER_LIMIT_SQL, customer_usage_scope
from usage.metrics import ACTIVE_PROJECTS
from usage.metrics import BY_CODE as METRICS_BY_CODE
from usage.names import render
from usage.numbers import count_of, number_plain
from usage.services.drift import drift_sql


@dataclass
class Finding:
    """Something wrong that is not counter drift: over a limit, a stale period, a broken trigger."""

    check: str
    customer_id: str | None
    email: str | None
    target_id: str | None
    detail: str
    fix: str = ""

    @property
    def label(self) -> str:
        return FINDING_LABELS.get(self.check, self.check)

    def as_dict(self):
        return {k: getattr(self, k) for k in ("check", "customer_id", "email", "target_id", "detail", "fix")}


FINDING_CHECKS = ("trigger_health", "over_limit", "stale_period", "failed_webhook")
# The findings in words, for pages and messages (JSON and CSV keep the codes above).
FINDING_LABELS = {
    "trigger_health": "trigger or function not healthy",
    "over_limit": "over a limit",
    "stale_period": "period ended without a rollover",
    "failed_webhook": "failed webhook",
}


def findings(customer_ids=None, *, skip=(), after_scan: bool = False) -> list[Finding]:
    """Every finding in scope (None: every customer), in this order; ``skip``: checks left out.
    ``after_scan``: this transaction's drift scan covered the scope (the report's), so the over-limit
    finding reads the truth from it (OVER_LIMIT_AFTER_SCAN_SQL)."""
    return list(findings_stream(customer_ids, skip=skip, after_scan=after_scan))


def findings_stream(customer_ids=None, *, skip=(), after_scan: bool = False) -> Iterator[Finding]:
    """findings() as they are read, each check's rows through a server-side cursor: the report over a
    million customers holds a chunk of them, never all (94k at 1M)."""
    providers = {
        "trigger_health": lambda: unhealthy_triggers(),
        "over_limit": lambda: over_limit(customer_ids, after_scan=after_scan),
        "stale_period": lambda: stale_period(customer_ids),
        "failed_webhook": lambda: failed_webhook(customer_ids),
    }
    for check in FINDING_CHECKS:
        if check not in skip:
            yield from providers[check]()


def _streamed(statement: str, params, chunk_size: int = 2000) -> Iterator[tuple]:
    """A statement's rows, a chunk at a time (a server-side cursor inside the caller's transaction)."""
    with connection.chunked_cursor() as cursor:
        cursor.execute(statement, params)
        while chunk := cursor.fetchmany(chunk_size):
            yield from chunk


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


# Computed from the truth, never from a counter that may have drifted (issue 11 finding 4): see
# billing.selectors.CUSTOMER_USAGE_SQL (the live plan, the allowances of the catalogue, the active
# projects themselves and the period's usage events). A customer with no row for its current period
# (S1 "missing") is still over when its projects are.
_OVER_LIMIT_ORDER = "ORDER BY m.used / nullif(m.allowance + m.credit, 0) DESC NULLS FIRST, u.email\n"

# Stale: the customer's period, or its live subscription's (billing_live_by_customer joined once).
_STALE_PERIOD = """
SELECT c.id, c.email, 'customer' AS what, c.current_period_end
FROM customers c WHERE c.current_period_end <= now() {scope}
UNION ALL
SELECT c.id, c.email, s.processor || ' subscription', s.current_period_end
FROM customers c
JOIN billing_live_by_customer() AS ls ON ls.customer = c.id
JOIN subscriptions s ON s.id = ls.subscription_id
WHERE s.current_period_end <= now() {scope}
"""


def _scope(customer_ids):
    if customer_ids is None:
        return "", {}
    return "AND c.id = ANY(%(ids)s::uuid[])", {"ids": [str(i) for i in customer_ids]}


def over_limit(customer_ids=None, *, after_scan: bool = False):
    """Over a limit now, by the truth; ``after_scan``: read it from this transaction's drift scan of
    the same customers (set-based: the report over a million customers), else count it per customer."""
    scope, params = customer_usage_scope(customer_ids)
    if after_scan:
        statement = drift_sql((OVER_LIMIT_AFTER_SCAN_SQL + _OVER_LIMIT_ORDER).format(scope=scope))
    else:
        statement = render((OVER_LIMIT_SQL + _OVER_LIMIT_ORDER).format(scope=scope))
    for customer_id, email, plan, code, used, allowance in _streamed(statement, params):
        used_n, allowance_n = number_plain(used), number_plain(allowance)
        percent = f"{used / allowance * 100:.0f} %" if allowance else "no allowance"
        metric = METRICS_BY_CODE[code]
        fix = (
            f"archive {count_of(used_n - allowance_n, 'project')} or move to a bigger plan"
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
    for customer_id, email, what, ended in _streamed(render(_STALE_PERIOD.format(scope=scope)), params):
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
    statement = render(_FAILED_WEBHOOKS.format(scope=scope))
    for customer_id, email, processor, event_type, event_id, received, error in _streamed(statement, params):
        yield Finding(
            "failed_webhook",
            str(customer_id) if customer_id else None,
            email,
            event_id,
            f"{processor} {event_type} received {received:%Y-%m-%d %H:%M} UTC failed: {error}",
            "fix the cause, then replay it: admin > Webhook events > Replay selected failed events",
        )
