"""Finance's reads. Each page is one or two set-based statements over usage_tracking (the per-period
counters) and the credit ledger (credit_grants, credit_draws), never over raw usage events, so a page
costs the same handful of queries at a thousand customers or a million (SPEC §7, §11).

They read from ``settings.FINANCE_DATABASE``: the streaming replica when DATABASE_REPLICA_URL is set
(SPEC §12), else the primary. Nothing here writes, not even a temporary table (a replica refuses both).

"Month" means what ``usage_report --month`` means: the usage periods that started in that month. The
usage page sums the command's rows per plan (billing.ops.usage_report.months_by_plan: the same rule per
period, in statements a month of a million periods can afford; tests compare them plan by plan); a
closed month's figures come from its summary while it is exact, which cron writes from the same
function (billing.services.usage_months).
"""

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connections, models

from billing.models import CreditDraw, CreditGrant, Plan
from billing.ops.usage_report import (
    FIRST_MONTH,
    MONTH_FORMAT,
    REPORT_FIELDS,
    month_live,
    month_parse,
    months_used_by_plan,
    usage_report,
)
from billing.selectors import OVER_LIMIT_RULE, USAGE_PREFIX, over_limit_lines, period_plan_sql
from billing.services.usage_months import summarized_months
from usage.metrics import BY_CODE, METERED
from usage.metrics import METRICS as CATALOGUE
from usage.models import UsageTracking
from usage.names import render

__all__ = ["REPORT_FIELDS", "month_parse", "usage_report"]

# The metered metrics (usage/metrics.py) as (key, label, unit, whole); key = the prefix usage_report's
# columns give the metric (ai_interactions, ai_allowance, ai_from_credit; minutes, ...).
REPORT_KEYS = {"ai_interaction": "ai", "minutes": "minutes"}
METRICS = tuple((REPORT_KEYS[m.code], m.title, m.unit, m.whole) for m in METERED)
CREDIT_SOURCES = {"purchase": "Purchased", "goodwill": "Goodwill"}

# SQL lists of the ledger's values, from their definitions (the catalogue, the models' choices).
_METERED_VALUES = ", ".join(f"('{m.code}')" for m in METERED)
_SOURCE_VALUES = ", ".join(f"('{value}')" for value in CreditGrant.Source.values)
_TAKE_BACK = ", ".join(f"'{kind}'" for kind in CreditDraw.TAKE_BACK_KINDS)


PLAN_CODE = re.compile(r"[a-z0-9_-]{1,32}")


def finance_database() -> str:
    return getattr(settings, "FINANCE_DATABASE", "default")


def _fetchall(sql: str, params: dict) -> list[tuple]:
    with connections[finance_database()].cursor() as cursor:
        cursor.execute(render(sql), params)
        return cursor.fetchall()


def _year_month(month: str) -> tuple[int, int]:
    """YYYY-MM as numbers, its format checked but not its range: a twelve-month window to the first month
    month_parse accepts starts before it (and holds nothing there)."""
    if not MONTH_FORMAT.fullmatch(month):
        month_parse(month)  # raises the format's message
    year, mon = month.split("-")
    return int(year), int(mon)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    year, mon = _year_month(month)
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
    return start, end


def month_shift(month: str, months: int) -> str:
    year, mon = _year_month(month)
    index = year * 12 + mon - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def last_full_month(today: date | None = None) -> str:
    today = today or datetime.now(UTC).date()
    return (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")


def plan_parse(code: str | None) -> Plan | None:
    """The plan a filter names, or None for every plan; ValueError naming the plans otherwise."""
    if not code:
        return None
    # A code is short and plain: anything else (a NUL byte PostgreSQL cannot take) is no plan.
    plan = (
        Plan.objects.using(finance_database()).filter(code=code).first()
        if PLAN_CODE.fullmatch(code)
        else None
    )
    if plan is None:
        codes = ", ".join(Plan.objects.using(finance_database()).values_list("code", flat=True))
        raise ValueError(f"no plan {code!r}; the plans are: {codes}")
    return plan


# --- usage by month and plan ---------------------------------------------------------------------


@dataclass
class MetricTotals:
    used: Decimal = Decimal(0)
    allowance: Decimal | None = Decimal(0)  # None: unlimited for at least one period
    overage: Decimal = Decimal(0)  # usage beyond the allowance, period by period
    from_credit: Decimal = Decimal(0)  # what overage credit paid for


@dataclass
class PlanUsage:
    plan: str | None  # code; None for customers with no plan at all
    name: str
    price: int | None  # minor units a month
    periods: int = 0
    active_projects: int = 0
    metrics: dict = field(default_factory=dict)  # key -> MetricTotals

    def add(self, other: "PlanUsage") -> None:
        self.periods += other.periods
        self.active_projects += other.active_projects
        for key, totals in other.metrics.items():
            mine = self.metrics.setdefault(key, MetricTotals())
            mine.used += totals.used
            mine.overage += totals.overage
            mine.from_credit += totals.from_credit
            mine.allowance = (
                None
                if mine.allowance is None or totals.allowance is None
                else mine.allowance + totals.allowance
            )


# A summarized month's rows, in months_by_plan's shape (BY_PLAN_FIELDS).
_SUMMARY = """
SELECT plan, periods, active_projects, ai_used, ai_allowance, ai_overage, ai_from_credit,
       minutes_used, minutes_allowance, minutes_overage, minutes_from_credit
FROM billing_usage_month_plans
WHERE period_month = %(month)s AND (%(plan)s::text IS NULL OR plan = %(plan)s)
"""


# The month's summary, if any: when it was built, and whether a change was noted in the month since.
_SUMMARY_BUILT = """
SELECT s.built_at, EXISTS (SELECT 1 FROM usage_months_changed c WHERE c.period_month = s.period_month)
FROM billing_usage_months s WHERE s.period_month = %(month)s
"""


@dataclass
class MonthStanding:
    """Whether a month's figures are final, for the page to say so.

    Final: read from the month's summary (every period that started in it had ended when cron wrote
    it, at ``summarized_at``, and nothing has changed in it since). Otherwise summed from the periods as
    they are now: ``running`` of them have not ended yet (the last ends at ``last_end``), or all have
    ended and the summary is not written yet, or a change (a late event, a recount) was noted in the
    month after its summary of ``summarized_at`` (``changed``)."""

    final: bool
    summarized_at: datetime | None = None
    changed: bool = False
    running: int = 0
    last_end: datetime | None = None
    as_of: datetime | None = None  # when the live figures were read


@dataclass
class MonthUsage:
    rows: list  # PlanUsage per plan, cheapest first
    total: "PlanUsage"
    standing: MonthStanding


def usage_by_plan(month: str, plan: Plan | None = None) -> tuple[list[PlanUsage], PlanUsage]:
    """Per plan (cheapest first) and in total: periods, projects, and per metric used, allowance,
    overage and credit drawn, for the usage periods that started in ``month``."""
    usage = month_usage(month, plan)
    return usage.rows, usage.total


def month_usage(month: str, plan: Plan | None = None) -> MonthUsage:
    """usage_by_plan's figures and whether they are final (MonthStanding)."""
    month = month_parse(month)
    plans = {p.code: p for p in Plan.objects.using(finance_database()).order_by("price", "code")}
    found = {}
    # A closed month's summary while it is exact (billing.services.usage_months), else the periods.
    built = _fetchall(_SUMMARY_BUILT, {"month": month})
    summarized_at, changed = built[0] if built else (None, False)
    if summarized_at and not changed:
        figures = _fetchall(_SUMMARY, {"month": month, "plan": plan.code if plan else None})
        standing = MonthStanding(final=True, summarized_at=summarized_at)
    else:
        live = month_live(month, plan.code if plan else None, using=finance_database())
        figures = live.figures
        standing = MonthStanding(
            final=False,
            summarized_at=summarized_at,
            changed=changed,
            running=live.running,
            last_end=live.last_end,
            as_of=datetime.now(UTC),
        )
    for code, periods, projects, *numbers in figures:
        known = plans.get(code)
        row = PlanUsage(code, known.name if known else "(no plan)", known.price if known else None)
        row.periods, row.active_projects = periods, projects
        for (key, *_), chunk in zip(METRICS, (numbers[0:4], numbers[4:8]), strict=True):
            row.metrics[key] = MetricTotals(*chunk)
        found[code] = row
    order = [code for code in plans if code in found] + [code for code in found if code not in plans]
    rows = [found[code] for code in order]
    total = PlanUsage(None, "All plans", None, metrics={key: MetricTotals() for key, *_ in METRICS})
    for row in rows:
        total.add(row)
    return MonthUsage(rows, total, standing)


def usage_rows(month: str, plan: Plan | None = None) -> Iterator[dict]:
    """The command's rows (one per usage period), optionally one plan's: the CSV streams these."""
    for row in usage_report(month, using=finance_database()):
        if plan is None or row["plan"] == plan.code:
            yield row


# --- over-limit customers ------------------------------------------------------------------------


# Current period (usage_period_current), tracked counters, its plan (period_plan_sql: the plan stamped
# on the period, which for the current period is the live plan: a plan change restamps it; no join of
# a million live subscriptions) and its allowance per metric (billing_plan_allowance: once per plan, not
# per row), the overage credit usage drew in the period (for the periods above an
# allowance only); "over" is billing.selectors' one rule
# (over_limit_lines, OVER_LIMIT_RULE) read from the counters. Ranked by overshoot (the excess over
# the limit, relative to it), then by email.
# "Since": the first of the unbroken run of periods, up to this one, over the same limit by the same
# rule (the per-period counters against the plan now; subscriptions keep no plan history).
#
# Two statements: the page's first lines (``limit``) and every line (the CSV). The page takes the
# emails (the tie-break) of the lines ranked at or above its last one only, by key, not by a join of
# every customer. Both walk back through the earlier periods one period at a time while the line is
# still over (at 1M: 210k periods for 59k lines, where reading every earlier period took 700k).
def _over_limit_sql(*, every: bool, above_plan: str) -> str:
    plan_allowances = ", ".join(f"pl.{USAGE_PREFIX[m.code]}_allowance" for m in CATALOGUE)
    allowance_names = ", ".join(f"{USAGE_PREFIX[m.code]}_allowance" for m in CATALOGUE)
    kept_allowances = ", ".join(f"r.{USAGE_PREFIX[m.code]}_allowance" for m in CATALOGUE)
    tracked = ", ".join(f"t.{m.counter} AS {USAGE_PREFIX[m.code]}_tracked" for m in CATALOGUE)
    counters = ", ".join(f"t.{m.counter}" for m in CATALOGUE)
    credited = ", ".join(f"dr.{m.code} AS {USAGE_PREFIX[m.code]}_credited" for m in METERED)
    # A line over by the rule is above its allowance (the credit usage drew is a sum of consume's draws,
    # each positive), so only the periods with a counter above its allowance can be over: the credit
    # drawn is looked up for those (a few percent of the current periods), not for every period.
    per_metric = ", ".join(
        f"sum(d.quantity) FILTER (WHERE g.metric = '{m.code}') AS {m.code}" for m in METERED
    )
    # Each plan's allowances (billing_plan_allowance, read once per plan by _PLAN_ALLOWANCES just before)
    # as arrays, joined for the lines' plan and allowances.
    allowed = (
        "unnest(%(plan_id)s::bigint[], %(plan_code)s::text[], %(plan_name)s::text[], "
        + ", ".join(f"%({USAGE_PREFIX[m.code]}_allowance)s::numeric[]" for m in CATALOGUE)
        + f") AS pl(id, code, name, {allowance_names})"
    )
    # The overage credit usage drew within an earlier period, per metric (what credit paid for is not
    # over): the page's hundred lines look each one up; the CSV's lines read them from period_draws,
    # the draws of the customers listed, each summed into its period once (probed per period, the draws
    # took half the CSV's time at 1M).
    if every:
        earlier_credited = ", ".join(f"pd.{m.code} AS {USAGE_PREFIX[m.code]}_credited" for m in METERED)
        period_draws = f""", period_draws AS MATERIALIZED (
    SELECT t.customer_id, t.period_start, {per_metric}
    FROM credit_draws d JOIN credit_grants g ON g.id = d.grant_id
    JOIN usage_tracking t ON t.customer_id = d.customer_id
     AND d.drawn_at >= t.period_start AND d.drawn_at < t.period_end
    WHERE d.kind = 'usage' AND d.customer_id IN (SELECT customer_id FROM shown)
    GROUP BY t.customer_id, t.period_start
)"""
        draws_join = (
            "LEFT JOIN period_draws pd ON pd.customer_id = t.customer_id AND pd.period_start = t.period_start"
        )
    else:
        earlier_credited = ", ".join(
            f"""(
            SELECT sum(d.quantity) FROM credit_draws d JOIN credit_grants g ON g.id = d.grant_id
            WHERE d.customer_id = t.customer_id AND d.kind = 'usage' AND g.metric = '{m.code}'
              AND d.drawn_at >= t.period_start AND d.drawn_at < t.period_end
        ) AS {USAGE_PREFIX[m.code]}_credited"""
            for m in METERED
        )
        period_draws = draws_join = ""

    excess = "(o.used - o.allowance - o.credit)"
    ranking = "o.overshoot DESC, o.email, o.metric"
    if every:
        shown = "SELECT o.*, c.email FROM over o JOIN customers c ON c.id = o.customer_id"
    else:
        # The lines ranked at or above the page's last one by overshoot (ties included: the email
        # decides among them), each one's email by key; then the page's first %(limit)s.
        shown = (
            """SELECT * FROM (
        SELECT o.*, (SELECT c.email FROM customers c WHERE c.id = o.customer_id) AS email FROM (
            SELECT * FROM over ORDER BY overshoot DESC FETCH FIRST %(limit)s ROWS WITH TIES
        ) o
    ) o ORDER BY """
            + ranking
            + " LIMIT %(limit)s"
        )
    return f"""
WITH RECURSIVE usage AS (
    SELECT t.customer_id AS customer_id, pl.code AS plan_code, pl.name AS plan_name, {plan_allowances},
           {tracked}, t.period_start, t.period_end
    FROM usage_tracking t
    JOIN {allowed} ON pl.id = {period_plan_sql("t")}
    WHERE usage_period_current(t.period_start, t.period_end) AND ({above_plan})
), above AS MATERIALIZED (  -- a period above its plan's allowance: only these can be over (see above)
    SELECT u.* FROM usage u
), drawn AS (  -- the credit usage drew in each of those periods (one current period per customer)
    SELECT a.customer_id, {per_metric}
    FROM above a
    JOIN credit_draws d ON d.customer_id = a.customer_id AND d.kind = 'usage'
     AND d.drawn_at >= a.period_start AND d.drawn_at < a.period_end
    JOIN credit_grants g ON g.id = d.grant_id
    GROUP BY a.customer_id
), candidate AS (
    SELECT a.*, {credited} FROM above a LEFT JOIN drawn dr ON dr.customer_id = a.customer_id
), over AS (
    SELECT u.customer_id, u.plan_code, u.plan_name, {allowance_names}, u.period_start,
           m.metric, m.used, m.allowance, m.credit,
           (m.used - m.allowance - m.credit) / greatest(m.allowance, 1) AS overshoot
    FROM candidate u
    {over_limit_lines("tracked")}
    WHERE {OVER_LIMIT_RULE}
), shown AS MATERIALIZED (
    {shown}
){period_draws}, run AS (  -- each line's period, then the period before it while that one is over the same limit too
    SELECT customer_id, metric, period_start, {allowance_names} FROM shown
    UNION ALL
    SELECT r.customer_id, r.metric, t.period_start, {kept_allowances}
    FROM run r
    CROSS JOIN LATERAL (  -- the customer's period before this one
        SELECT t.customer_id, t.period_start, t.period_end, {counters} FROM usage_tracking t
        WHERE t.customer_id = r.customer_id AND t.period_start < r.period_start
        ORDER BY t.period_start DESC LIMIT 1
    ) t
    {draws_join}
    CROSS JOIN LATERAL (SELECT {kept_allowances}, {tracked}, {earlier_credited}) u
    {over_limit_lines("tracked")}
    WHERE m.metric = r.metric AND {OVER_LIMIT_RULE}
), since AS (
    SELECT customer_id, metric, min(period_start) AS period_start FROM run GROUP BY customer_id, metric
)
SELECT o.customer_id, o.email, o.plan_code, o.plan_name, o.metric, o.used, o.allowance, o.credit,
       {excess} AS excess, o.period_start, since.period_start AS since
FROM shown o
JOIN since ON since.customer_id = o.customer_id AND since.metric = o.metric
ORDER BY {ranking}
"""


_PLAN_ALLOWANCES = (
    "SELECT pl.id, pl.code, pl.name, "
    + ", ".join(f"billing_plan_allowance(pl, '{m.code}')" for m in CATALOGUE)
    + " FROM plans pl"
)


@dataclass
class OverLimit:
    customer_id: str
    email: str
    plan: str
    plan_name: str
    metric: str
    used: Decimal
    allowance: Decimal
    credit: Decimal  # overage credit drawn this period (raises the limit it paid for)
    excess: Decimal
    period_start: datetime
    since: datetime

    @property
    def limit_label(self) -> str:
        return BY_CODE[self.metric].title

    @property
    def percent(self) -> int:
        return round(self.used / max(self.allowance + self.credit, 1) * 100)


def _plan_allowances() -> dict:
    """The over-limit statements' plan parameters: each plan's id, code, name and allowances, as arrays."""
    columns = ["plan_id", "plan_code", "plan_name", *(f"{USAGE_PREFIX[m.code]}_allowance" for m in CATALOGUE)]
    rows = _fetchall(_PLAN_ALLOWANCES, {})
    return {name: [row[i] for row in rows] for i, name in enumerate(columns)}


# Counters stored as integers (active projects): compared with the floor of an allowance, an integer
# constant, so the planner reads the column's statistics (a cast of the column to numeric hides them).
_INTEGER_COUNTERS = frozenset(
    m.code for m in CATALOGUE if isinstance(UsageTracking._meta.get_field(m.counter), models.IntegerField)
)


def _above_plan(plans: dict) -> tuple[str, dict]:
    """The periods above their own plan's allowance in a metric at least (the only ones that can be over,
    see _over_limit_sql), as a condition on the period's own columns: per plan, its stamp and its
    allowances as constants. The workers that scan the current periods in parallel keep only these
    (57k of a million at 1M), and the planner estimates them from the counters' statistics, so it sees
    that the parallel scan hands on few rows. Compared through a join of the plans (or a subquery's
    least allowance) the estimate was a third per comparison, the parallel plan looked dearer than a
    serial index scan, and on the live layout (periods stored by month, period_end correlated with the
    heap) the page took that serial scan (README, "Finance pages"). A period with no plan is above none."""
    clauses, params = [], {}
    for i, plan_id in enumerate(plans["plan_id"]):
        above = []
        for m in CATALOGUE:
            allowance = plans[f"{USAGE_PREFIX[m.code]}_allowance"][i]
            if allowance is None:  # the plan does not limit the metric
                continue
            key = f"above_{i}_{USAGE_PREFIX[m.code]}"
            # An integer above a number is above its floor, and the other way round.
            params[key] = math.floor(allowance) if m.code in _INTEGER_COUNTERS else allowance
            above.append(f"t.{m.counter} > %({key})s")
        if above:
            params[f"above_{i}"] = plan_id
            clauses.append(f"({period_plan_sql('t')} = %(above_{i})s AND ({' OR '.join(above)}))")
    return " OR ".join(clauses) or "false", params


def _over_limit_statement(*, every: bool) -> tuple[str, dict]:
    """The over-limit statement (the page's first lines or, ``every``, all of them) and its parameters,
    built for the plans as they are now."""
    plans = _plan_allowances()
    above_plan, params = _above_plan(plans)
    return _over_limit_sql(every=every, above_plan=above_plan), {**plans, **params}


def over_limit_customers(limit: int | None = None) -> list[OverLimit]:
    """The first ``limit`` over-limit lines, largest overshoot first (None: every line)."""
    if limit is not None and limit < 1:
        return []
    if limit is None:
        sql, params = _over_limit_statement(every=True)
        return [OverLimit(str(r[0]), *r[1:]) for r in _fetchall(sql, params)]
    sql, params = _over_limit_statement(every=False)
    return [OverLimit(str(r[0]), *r[1:]) for r in _fetchall(sql, {**params, "limit": limit})]


def over_limit_stream(chunk_size: int = 2000) -> Iterator[OverLimit]:
    """Every over-limit line, through a server-side cursor (the CSV export)."""
    sql, params = _over_limit_statement(every=True)
    with connections[finance_database()].chunked_cursor() as cursor:
        cursor.execute(render(sql), params)
        while batch := cursor.fetchmany(chunk_size):
            for r in batch:
                yield OverLimit(str(r[0]), *r[1:])


# --- overage credit sold and consumed, by month --------------------------------------------------

# Activity in each month, per source and metric: granted (new grants), drawn (by usage: draws of kind
# usage), refunded (taken back: draws of kind refund or chargeback, issue 10), expired (what was left on
# grants that expired that month), and left at the month's end (the running balance).
_CREDIT_BY_MONTH = f"""
WITH months AS (
    SELECT generate_series(%(first)s::timestamptz, %(last)s::timestamptz, interval '1 month') AS month
), kinds AS (
    SELECT s.source, m.metric FROM (VALUES {_SOURCE_VALUES}) s(source)
    CROSS JOIN (VALUES {_METERED_VALUES}) m(metric)
), moves AS (
    SELECT date_trunc('month', created_at, 'UTC') AS month, source, metric,
           granted, 0::numeric AS drawn, 0::numeric AS refunded, 0::numeric AS expired
    FROM credit_grants WHERE created_at < %(end)s
    UNION ALL
    SELECT date_trunc('month', d.drawn_at, 'UTC'), g.source, g.metric, 0,
           CASE WHEN d.kind = 'usage' THEN d.quantity ELSE 0 END,
           CASE WHEN d.kind IN ({_TAKE_BACK}) THEN d.quantity ELSE 0 END, 0
    FROM credit_draws d JOIN credit_grants g ON g.id = d.grant_id WHERE d.drawn_at < %(end)s
    UNION ALL
    SELECT date_trunc('month', expires_at, 'UTC'), source, metric, 0, 0, 0, remaining
    FROM credit_grants WHERE expires_at <= least(%(now)s, %(end)s) AND remaining > 0
), per AS (
    SELECT month, source, metric, sum(granted) AS granted, sum(drawn) AS drawn, sum(refunded) AS refunded,
           sum(expired) AS expired
    FROM moves GROUP BY 1, 2, 3
), before AS (
    SELECT source, metric, sum(granted - drawn - refunded - expired) AS balance
    FROM per WHERE month < %(first)s GROUP BY 1, 2
)
SELECT to_char(mo.month AT TIME ZONE 'UTC', 'YYYY-MM'), k.source, k.metric,
       coalesce(p.granted, 0), coalesce(p.drawn, 0), coalesce(p.refunded, 0), coalesce(p.expired, 0),
       coalesce(b.balance, 0) + sum(coalesce(p.granted - p.drawn - p.refunded - p.expired, 0))
           OVER (PARTITION BY k.source, k.metric ORDER BY mo.month)
FROM months mo CROSS JOIN kinds k
LEFT JOIN per p ON p.month = mo.month AND p.source = k.source AND p.metric = k.metric
LEFT JOIN before b ON b.source = k.source AND b.metric = k.metric
ORDER BY mo.month, k.source, k.metric
"""

CREDIT_FIELDS = ("month", "source", "metric", "granted", "drawn", "refunded", "expired", "left")


@dataclass
class CreditMonth:
    month: str
    source: str
    metric: str
    granted: Decimal
    drawn: Decimal
    refunded: Decimal
    expired: Decimal
    left: Decimal

    @property
    def source_label(self) -> str:
        return CREDIT_SOURCES.get(self.source, self.source)

    @property
    def metric_label(self) -> str:
        known = BY_CODE.get(self.metric)
        return known.title if known else self.metric


def credit_by_month(first: str, last: str, now: datetime | None = None) -> list[CreditMonth]:
    """Credit activity per month from ``first`` to ``last`` (YYYY-MM, inclusive), per source and metric.

    ``now`` (the clock, passed in): grants that expired before it count as expired."""
    start, _ = month_bounds(first)
    last_start, end = month_bounds(last)
    if last_start < start:
        raise ValueError(f"the months run backwards: {first} is after {last}")
    now = now or datetime.now(UTC)
    rows = _fetchall(_CREDIT_BY_MONTH, {"first": start, "last": last_start, "end": end, "now": now})
    return [CreditMonth(*row) for row in rows]


# --- trends --------------------------------------------------------------------------------------

# The summarized months', from their summaries.
_SUMMARY_TREND = """
SELECT period_month, plan, ai_used, minutes_used FROM billing_usage_month_plans
WHERE period_month = ANY(%(months)s)
"""


def usage_trend(last: str, months: int = 12) -> dict:
    """{"months": [...], "series": {metric key: {plan code: [used per month]}}} over ``months`` months."""
    first = month_shift(last, -(months - 1))
    axis = [month_shift(first, i) for i in range(months)]
    series = {key: {} for key, *_ in METRICS}
    summarized = summarized_months(axis, using=finance_database())
    # the months without an exact summary, from the horizon's first month on (none starts before it)
    live = [m for m in axis if m not in summarized and m >= FIRST_MONTH]
    found = _fetchall(_SUMMARY_TREND, {"months": sorted(summarized)}) if summarized else []
    if live:  # the months without an exact summary: the current month, one whose periods still run
        for month, per_plan in months_used_by_plan(live, using=finance_database()).items():
            found += [(month, *used) for used in per_plan]
    for month, plan, ai, minutes in found:
        for key, value in (("ai", ai), ("minutes", minutes)):
            series[key].setdefault(plan, [Decimal(0)] * months)[axis.index(month)] = value
    return {"months": axis, "series": series}


_DRIFT_TREND = """
SELECT to_char(date_trunc('week', started_at, 'UTC') AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
       coalesce(sum(discrepancies), 0),
       coalesce(sum(fixed) FILTER (WHERE mode = 'apply'), 0),
       count(*) FILTER (WHERE mode = 'report'), count(*) FILTER (WHERE mode = 'apply')
FROM reconciliation_runs
WHERE started_at >= %(since)s AND status = 'completed'
GROUP BY 1 ORDER BY 1
"""


def drift_trend(weeks: int = 12, now: datetime | None = None) -> list[dict]:
    """Per week (Monday, UTC), from the run history: drifted counters found (by reports, and by the
    scan each reconciliation starts with) and set right by reconciliations; quiet weeks as zeros."""
    now = now or datetime.now(UTC)
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    first = monday - timedelta(weeks=weeks - 1)
    found = {row[0]: row[1:] for row in _fetchall(_DRIFT_TREND, {"since": first})}
    out = []
    for i in range(weeks):
        week = (first + timedelta(weeks=i)).strftime("%Y-%m-%d")
        drifted, fixed, reports, applies = found.get(week, (0, 0, 0, 0))
        out.append({"week": week, "found": drifted, "fixed": fixed, "reports": reports, "applies": applies})
    return out
