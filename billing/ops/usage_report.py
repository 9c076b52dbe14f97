"""Finance's monthly usage report (SPEC §8): per customer and usage period, used vs allowance, overage.

One statement over the month's usage_tracking rows, streamed through a server-side cursor, so a
million-customer month never sits in memory. "Month" is the month the usage period started in
(usage_tracking.month). The plan shown is the customer's plan now (subscriptions keep no history).
"""

import re
from collections.abc import Iterator

from django.db import connection

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

_REPORT = """
SELECT c.id, c.email, pl.code, t.period_start, t.period_end, t.active_projects_count,
       t.ai_interactions_count, billing_plan_allowance(pl, 'ai_interaction')::bigint, coalesce(dr.ai, 0),
       t.minutes_used, billing_plan_allowance(pl, 'minutes')::bigint, coalesce(dr.minutes, 0)
FROM usage_tracking t
JOIN customers c ON c.id = t.customer_id
CROSS JOIN LATERAL billing_live_plan(c.id) AS lp
LEFT JOIN plans pl ON pl.id = lp.plan_id
LEFT JOIN LATERAL (
    SELECT sum(d.quantity) FILTER (WHERE g.metric = 'ai_interaction') AS ai,
           sum(d.quantity) FILTER (WHERE g.metric = 'minutes') AS minutes
    FROM credit_draws d JOIN credit_grants g ON g.id = d.grant_id
    WHERE d.customer_id = c.id AND d.drawn_at >= t.period_start AND d.drawn_at < t.period_end
) AS dr ON true
WHERE t.month = %s
ORDER BY c.email, t.period_start
"""


def month_parse(value: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value or ""):
        raise ValueError(f"month must be YYYY-MM (e.g. 2026-11), not {value!r}")
    return value


def usage_report(month: str, chunk_size: int = 2000) -> Iterator[dict]:
    month = month_parse(month)
    with connection.chunked_cursor() as cursor:
        cursor.execute(_REPORT, [month])
        while batch := cursor.fetchmany(chunk_size):
            for row in batch:
                yield dict(zip(REPORT_FIELDS, row, strict=True))
