"""Finance's monthly usage report (SPEC §8): per customer and usage period, used vs allowance, overage.

One statement over the month's usage_tracking rows, streamed through a server-side cursor, so a
million-customer month never sits in memory. "Month" is the month the usage period started in
(usage_tracking.month). The plan shown is the plan in effect for the period (the plan stamped on it:
billing.selectors.period_plan_sql), not the customer's plan now: a plan change today moves no past
month's usage between plans.
"""

import re
from collections.abc import Iterator

from django.db import connections
from django.utils import timezone

from billing.selectors import period_plan_sql
from usage.horizon import EARLIEST
from usage.names import render
from usage.text import echo

REPORT_FIELDS = (
    "customer_id",
    "email",
    "plan",
    "period_start",
    "period_end",
    "active_projects",
    "ai_interactions",
    "ai_allowance",
    "ai_from_credit",
    "minutes",
    "minutes_allowance",
    "minutes_from_credit",
)

# One row per usage period that started in the month; finance's pages aggregate this same statement
# (billing/finance/selectors.py), so the page, its CSV and this command cannot disagree. Set-based over
# the month's million periods: each period's plan is the one stamped on it (period_plan_sql; the live
# plan is probed only for a period not stamped yet), so no subscription is read per row; customers by a LEFT JOIN on their key (usage_tracking.customer_id is a non-null foreign key, so no
# row is lost), which PostgreSQL drops when the aggregate reads no customer column.
REPORT_ROWS_SQL = f"""
WITH allowed AS MATERIALIZED (  -- each plan's allowances once, not once per period row
    SELECT pl.id, pl.code, billing_plan_allowance(pl, 'ai_interaction')::bigint AS ai_allowance,
           billing_plan_allowance(pl, 'minutes')::bigint AS minutes_allowance
    FROM plans pl
), drawn AS (  -- overage credit usage drew in each of the month's periods (not a refund's take-back);
    -- a period that started in the month starts at its first instant or later, so do its draws
    SELECT t.id, sum(d.quantity) FILTER (WHERE g.metric = 'ai_interaction') AS ai,
           sum(d.quantity) FILTER (WHERE g.metric = 'minutes') AS minutes
    FROM credit_draws d
    JOIN usage_tracking t ON t.customer_id = d.customer_id
     AND d.drawn_at >= t.period_start AND d.drawn_at < t.period_end
    JOIN credit_grants g ON g.id = d.grant_id
    WHERE t.month = %(month)s AND d.kind = 'usage'
      AND d.drawn_at >= (%(month)s || '-01 00:00:00+00')::timestamptz
    GROUP BY t.id
)
SELECT t.customer_id AS customer_id, c.email, pl.code AS plan, t.period_start, t.period_end,
       t.active_projects_count AS active_projects,
       t.ai_interactions_count AS ai_interactions,
       pl.ai_allowance,
       coalesce(dr.ai, 0) AS ai_from_credit,
       t.minutes_used AS minutes, pl.minutes_allowance,
       coalesce(dr.minutes, 0) AS minutes_from_credit
FROM usage_tracking t
LEFT JOIN customers c ON c.id = t.customer_id
LEFT JOIN allowed pl ON pl.id = {period_plan_sql("t")}
LEFT JOIN drawn dr ON dr.id = t.id
WHERE t.month = %(month)s
"""

_REPORT = REPORT_ROWS_SQL + "ORDER BY c.email, t.period_start\n"


FIRST_MONTH = EARLIEST.strftime("%Y-%m")  # no usage period starts before the horizon (usage/horizon.py)
MONTHS_AHEAD = 12  # periods open a month ahead at most; a year leaves room for clocks and cron


MONTH_FORMAT = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def month_parse(value: str) -> str:
    """A report month, YYYY-MM, from FIRST_MONTH to a year after this month (ValueError otherwise)."""
    if not MONTH_FORMAT.fullmatch(value or ""):
        raise ValueError(f"month must be YYYY-MM (e.g. 2026-11), not {echo(value)}")
    today = timezone.now()
    year, month = divmod(today.year * 12 + today.month - 1 + MONTHS_AHEAD, 12)
    last = f"{year:04d}-{month + 1:02d}"
    if not FIRST_MONTH <= value <= last:
        raise ValueError(f"month {value} is out of range: from {FIRST_MONTH} to {last}")
    return value


def usage_report(month: str, chunk_size: int = 2000, using: str = "default") -> Iterator[dict]:
    month = month_parse(month)
    with connections[using].chunked_cursor() as cursor:
        cursor.execute(render(_REPORT), {"month": month})
        while batch := cursor.fetchmany(chunk_size):
            for row in batch:
                yield dict(zip(REPORT_FIELDS, row, strict=True))
