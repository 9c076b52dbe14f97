"""Finance's monthly usage report (SPEC §8): per customer and usage period, used vs allowance, overage.

One statement over the month's usage_tracking rows, streamed through a server-side cursor, so a
million-customer month never sits in memory. "Month" is the month the usage period started in
(usage_tracking.month). The plan shown is the customer's plan now (subscriptions keep no history).
"""

import re
from collections.abc import Iterator

from django.db import connections
from django.utils import timezone

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
# (billing/finance/selectors.py), so the page, its CSV and this command cannot disagree.
REPORT_ROWS_SQL = """
SELECT c.id AS customer_id, c.email, pl.code AS plan, t.period_start, t.period_end,
       t.active_projects_count AS active_projects,
       t.ai_interactions_count AS ai_interactions,
       billing_plan_allowance(pl, 'ai_interaction')::bigint AS ai_allowance,
       coalesce(dr.ai, 0) AS ai_from_credit,
       t.minutes_used AS minutes, billing_plan_allowance(pl, 'minutes')::bigint AS minutes_allowance,
       coalesce(dr.minutes, 0) AS minutes_from_credit
FROM usage_tracking t
JOIN customers c ON c.id = t.customer_id
CROSS JOIN LATERAL billing_live_plan(c.id) AS lp
LEFT JOIN plans pl ON pl.id = lp.plan_id
LEFT JOIN LATERAL (
    SELECT sum(d.quantity) FILTER (WHERE g.metric = 'ai_interaction') AS ai,
           sum(d.quantity) FILTER (WHERE g.metric = 'minutes') AS minutes
    FROM credit_draws d JOIN credit_grants g ON g.id = d.grant_id
    WHERE d.customer_id = c.id AND d.kind = 'usage'  -- not a refund's or chargeback's take-back
      AND d.drawn_at >= t.period_start AND d.drawn_at < t.period_end
) AS dr ON true
WHERE t.month = %(month)s
"""

_REPORT = REPORT_ROWS_SQL + "ORDER BY c.email, t.period_start\n"


FIRST_MONTH = "2000-01"  # no usage period started before billing-ops existed
MONTHS_AHEAD = 12  # periods open a month ahead at most; a year leaves room for clocks and cron


def month_parse(value: str) -> str:
    """A report month, YYYY-MM, from FIRST_MONTH to a year after this month (ValueError otherwise)."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value or ""):
        raise ValueError(f"month must be YYYY-MM (e.g. 2026-11), not {value!r}")
    today = timezone.now()
    year, month = divmod(today.year * 12 + today.month - 1 + MONTHS_AHEAD, 12)
    last = f"{year:04d}-{month + 1:02d}"
    if not FIRST_MONTH <= value <= last:
        raise ValueError(f"month {value} is out of range: from {FIRST_MONTH} to {last}")
    return value


def usage_report(month: str, chunk_size: int = 2000, using: str = "default") -> Iterator[dict]:
    month = month_parse(month)
    with connections[using].chunked_cursor() as cursor:
        cursor.execute(_REPORT, {"month": month})
        while batch := cursor.fetchmany(chunk_size):
            for row in batch:
                yield dict(zip(REPORT_FIELDS, row, strict=True))
