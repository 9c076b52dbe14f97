"""Reads several billing callers share."""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import connection
from django.db.models.expressions import RawSQL

from billing.models import Plan, Subscription
from usage.metrics import ACTIVE_PROJECTS, AI_INTERACTIONS, METRICS, MINUTES, Metric
from usage.models import ALL_CUSTOMERS, Customer, ReconciliationRun
from usage.names import render
from usage.sql_functions import SqlFunction, sql_functions

DEFAULT_PLAN_CODE = Plan.Code.FREE  # a customer with no live subscription is on Free (billing_live_plan)

SQL_DIR = Path(__file__).resolve().parent / "sql"  # billing's SQL functions, one current definition each


def sql_definitions() -> list[SqlFunction]:
    return sql_functions(SQL_DIR)


def period_plan_sql(alias: str) -> str:
    """The plan a usage period (``alias``: a usage_tracking row) is attributed to, defined once (SPEC
    §7 Finance): the plan in effect for that period, stamped on it (usage_tracking.plan_id) as it opens
    by billing's trigger (billing 0021, whoever opens it) and again while it runs when the live plan
    changes (billing 0018). Past periods keep their plan: a plan change today moves no past month
    between plans. A plain column, so a month's readers scan in parallel (the live-plan probe per
    row it replaced kept usage_report --month on one core).

    NULL means no plan was recorded: a period written while the stamp trigger was disabled (which
    check_triggers and /healthz report), or a customer with neither a live subscription nor a Free
    plan. Such a period is not dropped: every reader counts it in the line of no plan, so the totals
    still add up, and it shows that something is to be looked at."""
    return f"{alias}.plan_id"


def _live_plan(column: str, customer: Customer) -> RawSQL:
    # The one definition of the live plan: billing/sql/billing_live_plan.sql.
    return RawSQL(f"SELECT {column} FROM billing_live_plan(%s)", [customer.pk])


def live_subscription(customer: Customer) -> Subscription | None:
    """The customer's newest subscription that is not canceled, with its plan; None on the Free default."""
    return (
        Subscription.objects.select_related("plan").filter(pk=_live_plan("subscription_id", customer)).first()
    )


_UNKNOWN = object()


def customer_plan(
    customer: Customer, *, subscription: Any = _UNKNOWN, plans: Iterable[Plan] | None = None
) -> Plan | None:
    """The live subscription's plan, else Free; None when there is neither.

    Pass the live subscription (None: there is none) or the plan catalogue when the caller has them
    loaded: a query less each.
    """
    if subscription is _UNKNOWN:
        return Plan.objects.filter(pk=_live_plan("plan_id", customer)).first()
    if subscription is not None:
        return subscription.plan
    if plans is not None:
        return next((p for p in plans if p.code == DEFAULT_PLAN_CODE), None)
    return Plan.objects.filter(code=DEFAULT_PLAN_CODE).first()


def plan_allowance(plan: Plan, metric: Metric) -> int | None:
    """The plan's allowance per period of a metric of the catalogue (None = unlimited)."""
    return getattr(plan, metric.allowance)


# Each customer's plan, its current-period counters and their truth, in one statement: the customer
# list's columns and the over-limit finding read the same definition. The live plan is
# billing_live_plan, the current period usage_period_current, the allowances billing_plan_allowance
# (the metric catalogue). {scope} narrows the customers.
#
# Built in two steps: the customers with their period row, its truth and the credit drawn this period
# (``base``, fenced with OFFSET 0 so PostgreSQL plans it on its own: joined to the live plan, it took a
# million customers for 20,000 and probed each one's period row by index), then each one's live plan:
# billing_live_by_customer() joined once (at most one live subscription per customer, the unique index
# subscriptions_one_live_per_customer; none: the plan billing_live_plan(NULL) gives), which PostgreSQL
# probes by that index for a page of customers and hashes for a million (a billing_live_plan() call
# per customer took 1M index probes in the report).
def _customer_usage_sql(*, projects: str, ai: str, minutes: str, joins: str) -> str:
    """CUSTOMER_USAGE_SQL's columns; ``joins`` bring the truth of the three metrics and ``credited``."""
    return f"""
SELECT b.customer_id, b.email, pl.code AS plan_code, pl.name AS plan_name,
       s.status AS subscription_status, s.processor,
       pl.projects_allowance, pl.ai_allowance, pl.minutes_allowance,
       b.period_id, b.projects_tracked, b.ai_tracked, b.minutes_tracked,
       b.projects_actual, b.ai_actual, b.minutes_actual, b.ai_credited, b.minutes_credited
FROM (
    SELECT c.id AS customer_id, c.email,
           t.id AS period_id, t.active_projects_count AS projects_tracked,
           t.ai_interactions_count AS ai_tracked, t.minutes_used AS minutes_tracked,
           {projects} AS projects_actual, {ai} AS ai_actual, {minutes} AS minutes_actual,
           coalesce(credited.ai, 0) AS ai_credited, coalesce(credited.minutes, 0) AS minutes_credited
    FROM customers c
    LEFT JOIN usage_tracking t
           ON t.customer_id = c.id AND usage_period_current(t.period_start, t.period_end)
{joins}
    WHERE true {{scope}}
    OFFSET 0
) AS b
LEFT JOIN billing_live_by_customer() AS ls ON ls.customer = b.customer_id
CROSS JOIN billing_live_plan(NULL::uuid) AS nosub
JOIN (  -- each plan's allowances once (fenced): billing_plan_allowance per customer row was 66 s at 1M
    SELECT pl.id, pl.code, pl.name,
           billing_plan_allowance(pl, 'active_projects') AS projects_allowance,
           billing_plan_allowance(pl, 'ai_interaction') AS ai_allowance,
           billing_plan_allowance(pl, 'minutes') AS minutes_allowance
    FROM plans pl OFFSET 0
) AS pl ON pl.id = coalesce(ls.plan_id, nosub.plan_id)
LEFT JOIN subscriptions s ON s.id = ls.subscription_id
"""


# Metered usage beyond the allowance that overage credit paid for is not over: the credit usage drew
# in the current period (a refund's take-back paid for no usage), as a page reads it (per customer,
# by index) and as the report reads it (every draw once, grouped; the current periods fenced with
# OFFSET 0 so they are hashed once, where PostgreSQL probed a period per draw: 7.9 -> 1.6 s at 1M).
_CREDITED_SUMS = """sum(d.quantity) FILTER (WHERE g.metric = 'ai_interaction') AS ai,
           sum(d.quantity) FILTER (WHERE g.metric = 'minutes') AS minutes"""
_CREDITED_PER_CUSTOMER = f"""    LEFT JOIN LATERAL (
        SELECT {_CREDITED_SUMS}
        FROM credit_draws d JOIN credit_grants g ON g.id = d.grant_id
        WHERE d.customer_id = c.id AND d.kind = 'usage'
          AND d.drawn_at >= t.period_start AND d.drawn_at < t.period_end
    ) AS credited ON true"""
_CREDITED_GROUPED = f"""    LEFT JOIN (
        SELECT d.customer_id, {_CREDITED_SUMS}
        FROM credit_draws d JOIN credit_grants g ON g.id = d.grant_id
        JOIN (SELECT t.customer_id AS customer_id, t.period_start, t.period_end FROM usage_tracking t
              WHERE usage_period_current(t.period_start, t.period_end) OFFSET 0) AS pt
          ON pt.customer_id = d.customer_id
        WHERE d.kind = 'usage' AND d.drawn_at >= pt.period_start AND d.drawn_at < pt.period_end
        GROUP BY d.customer_id
    ) AS credited ON credited.customer_id = c.id"""

# A page of customers: the truth read per customer through indexes: active projects
# (projects_active_by_cust), the period's usage events (usage_events_sum_cover), the credit drawn.
CUSTOMER_USAGE_SQL = _customer_usage_sql(
    projects="active.projects",
    ai="coalesce(used.ai, 0)",
    minutes="coalesce(used.minutes, 0)",
    joins="""    CROSS JOIN LATERAL (
        SELECT count(*) AS projects FROM projects p WHERE p.customer_id = c.id AND p.status = 'active'
    ) AS active
    LEFT JOIN LATERAL (
        SELECT sum(e.quantity) FILTER (WHERE e.metric = 'ai_interaction') AS ai,
               sum(e.quantity) FILTER (WHERE e.metric = 'minutes') AS minutes
        FROM usage_events e
        WHERE e.customer_id = c.id AND e.metric IN ('ai_interaction', 'minutes')
          AND e.occurred_at >= t.period_start AND e.occurred_at < t.period_end
    ) AS used ON true
"""
    + _CREDITED_PER_CUSTOMER,
)

# The same rows inside a transaction whose drift scan (billing.ops.checks.drift_scan) covered these
# customers: the scan compared every counter with its truth and kept the ones that differ in
# usage_drift, so the truth is the counter plus the scan's difference (a customer with no current
# period row: 0 plus it). The report over a million customers reads this instead of counting each
# one's projects and summing its events again (600 s at 1M, bench/integrity.py). Run through
# usage.services.drift.drift_sql (usage_drift keeps its own names).
CUSTOMER_USAGE_AFTER_SCAN_SQL = _customer_usage_sql(
    projects="coalesce(t.active_projects_count, 0) + coalesce(dp.difference, 0)",
    ai="coalesce(t.ai_interactions_count, 0) + coalesce(da.difference, 0)",
    minutes="coalesce(t.minutes_used, 0) + coalesce(dm.difference, 0)",
    joins="""    LEFT JOIN usage_drift dp ON dp.check_name = 'active_projects' AND dp.customer_id = c.id
    LEFT JOIN usage_drift da
           ON da.check_name = 'ai_interactions' AND da.customer_id = c.id AND da.target_id = t.id::text
    LEFT JOIN usage_drift dm
           ON dm.check_name = 'minutes' AND dm.customer_id = c.id AND dm.target_id = t.id::text
"""
    + _CREDITED_GROUPED,
)


def customer_usage_scope(customer_ids: Iterable | None) -> tuple[str, dict]:
    """The {scope} of CUSTOMER_USAGE_SQL: every customer (None) or these."""
    if customer_ids is None:
        return "", {}
    return "AND c.id = ANY(%(ids)s::uuid[])", {"ids": [str(i) for i in customer_ids]}


# "Over a limit", defined once (issue 8's rule): a metric of the catalogue is over when the plan limits
# it (allowance not NULL) and usage is above the allowance plus the overage credit usage drew this
# period (credit paid for that usage; a gauge has none). The usage is either the truth ("actual": the
# active projects and the period's usage events, what support's findings read, so a drifted counter
# never produces a remedy) or the per-period counters ("tracked": what Finance's over-limit page
# reads at a million customers). Both read rows with CUSTOMER_USAGE_SQL's column names:
# {prefix}_allowance, {prefix}_actual / {prefix}_tracked, {prefix}_credited (metered only).
USAGE_PREFIX = {ACTIVE_PROJECTS.code: "projects", AI_INTERACTIONS.code: "ai", MINUTES.code: "minutes"}
OVER_LIMIT_SOURCES = ("actual", "tracked")
OVER_LIMIT_RULE = "m.allowance IS NOT NULL AND m.used > m.allowance + m.credit"


def over_limit_lines(source: str, row: str = "u") -> str:
    """One line (metric, used, allowance, credit) per metric of the catalogue for the usage row
    ``row``, from ``source``; the caller keeps the lines OVER_LIMIT_RULE holds for."""
    if source not in OVER_LIMIT_SOURCES:
        raise ValueError(f"over-limit source must be one of {OVER_LIMIT_SOURCES}, not {source!r}")
    lines = ",\n    ".join(
        f"('{m.code}', {row}.{USAGE_PREFIX[m.code]}_{source}::numeric, {row}.{USAGE_PREFIX[m.code]}_allowance, "
        + (f"coalesce({row}.{USAGE_PREFIX[m.code]}_credited, 0))" if m.metered else "0::numeric)")
        for m in METRICS
    )
    return f"CROSS JOIN LATERAL (VALUES\n    {lines}\n) AS m(metric, used, allowance, credit)"


# Each customer's usage over a limit, by the truth: one row per (customer, metric) over; "allowance"
# is what the customer may use (the plan's plus the credit drawn). The over-limit finding orders it;
# the customer list's filter asks whether a row exists for a customer.
def _over_limit_sql(usage_sql: str) -> str:
    return (
        "SELECT u.customer_id, u.email, u.plan_name, m.metric, m.used, m.allowance + m.credit AS allowance FROM ("
        + usage_sql
        + ") AS u\n"
        + over_limit_lines("actual")
        + f"\nWHERE {OVER_LIMIT_RULE}\n"
    )


OVER_LIMIT_SQL = _over_limit_sql(CUSTOMER_USAGE_SQL)
# The same lines after a drift scan of the same customers in this transaction (the report's).
OVER_LIMIT_AFTER_SCAN_SQL = _over_limit_sql(CUSTOMER_USAGE_AFTER_SCAN_SQL)


@dataclass
class CustomerUsage:
    """One row of CUSTOMER_USAGE_SQL: a customer's plan, current counters and their truth."""

    customer_id: object
    email: str
    plan_code: str
    plan_name: str
    subscription_status: str | None
    processor: str | None
    projects_allowance: Decimal | None
    ai_allowance: Decimal | None
    minutes_allowance: Decimal | None
    period_id: int | None
    projects_tracked: int | None
    ai_tracked: Decimal | None
    minutes_tracked: Decimal | None
    projects_actual: int
    ai_actual: Decimal
    minutes_actual: Decimal
    ai_credited: Decimal
    minutes_credited: Decimal

    @property
    def drifted(self) -> list[str]:
        """The current-period counters that differ from their truth (no row counts as 0)."""
        pairs = (
            (ACTIVE_PROJECTS.label, self.projects_tracked, self.projects_actual),
            (AI_INTERACTIONS.label, self.ai_tracked, self.ai_actual),
            (MINUTES.label, self.minutes_tracked, self.minutes_actual),
        )
        return [label for label, tracked, actual in pairs if (tracked or 0) != actual]


def customer_usage(customer_ids: Iterable | None) -> dict:
    """CustomerUsage by customer id, for a page of customers (one query)."""
    scope, params = customer_usage_scope(customer_ids)
    with connection.cursor() as cursor:
        cursor.execute(render(CUSTOMER_USAGE_SQL.format(scope=scope)), params)
        return {row[0]: CustomerUsage(*row) for row in cursor.fetchall()}


def last_full_report():
    """The last completed report over every customer: its findings are what "over a limit" means cheaply
    (a reconciliation fixes counters and records no findings)."""
    return (
        ReconciliationRun.objects.filter(
            status=ReconciliationRun.Status.COMPLETED,
            scope=ALL_CUSTOMERS,
            mode=ReconciliationRun.Mode.REPORT,
        )
        .order_by("-started_at", "-id")
        .first()
    )


def last_full_run():
    """The last completed report or reconciliation over every customer: what "drift now" means cheaply."""
    return (
        ReconciliationRun.objects.filter(status=ReconciliationRun.Status.COMPLETED, scope=ALL_CUSTOMERS)
        .order_by("-started_at", "-id")
        .first()
    )
