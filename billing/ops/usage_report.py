"""Finance's monthly usage report (SPEC §8): per customer and usage period, used vs allowance, overage.

One statement over the month's usage_tracking rows, streamed through a server-side cursor, so a
million-customer month never sits in memory. "Month" is the month the usage period started in
(usage_tracking.month). The plan shown is the plan in effect for the period (the plan stamped on it:
billing.selectors.period_plan_sql), not the customer's plan now: a plan change today moves no past
month's usage between plans.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

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

# One row per usage period that started in the month: the command and the CSV stream it; the month page
# sums the same rows per plan (months_by_plan below, same rule per period; tests compare them plan by
# plan). Each period's plan is the one stamped on it as it opened (period_plan_sql: a plain column, so
# the month's scan runs in parallel workers); the plans' allowances are read first (_ALLOWANCES) and
# joined as arrays; customers by a LEFT JOIN on their key (usage_tracking.customer_id is a non-null
# foreign key, so no row is lost), and a period with no stamp keeps its row with no plan.
REPORT_ROWS_SQL = f"""
WITH drawn AS (  -- overage credit usage drew in each of the month's periods (not a refund's take-back);
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
LEFT JOIN unnest(%(ids)s::bigint[], %(codes)s::text[], %(ai)s::bigint[], %(minutes)s::bigint[])
     AS pl(id, code, ai_allowance, minutes_allowance) ON pl.id = {period_plan_sql("t")}
LEFT JOIN drawn dr ON dr.id = t.id
WHERE t.month = %(month)s
"""

# Streamed by COPY (query) TO STDOUT, not a server-side cursor: PostgreSQL never runs a DECLAREd
# cursor's query in parallel, and COPY streams as flatly. Its text rows are read here, one COPY message
# per row, into the values a cursor would have returned. Reading 1M rows at load 6-7: this way 18.6 s,
# COPY without parsing 7-10 s, psycopg's chunked row stream (cursor.stream) 23-29 s, the serial
# DECLAREd cursor 38 s; psycopg's own COPY row parsing (Copy.rows) made usage.csv slower than before.
_REPORT = "COPY (" + REPORT_ROWS_SQL + "ORDER BY c.email, t.period_start\n) TO STDOUT"
# COPY's text format backslash-escapes these in a value (and writes NULL as \N); it writes nothing else
# escaped.
_COPY_ESCAPE = re.compile(r"\\(.)")
_COPY_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _text(value: str) -> str:
    if "\\" not in value:
        return value
    return _COPY_ESCAPE.sub(lambda m: _COPY_ESCAPED.get(m.group(1), m.group(1)), value)


# Each column's type from COPY's text (timestamps as ISO 8601 in the session's time zone, UTC).
_REPORT_TYPES = (UUID, _text, _text, datetime.fromisoformat, datetime.fromisoformat, int) + (
    Decimal,
    int,
    Decimal,
    Decimal,
    int,
    Decimal,
)
assert len(_REPORT_TYPES) == len(REPORT_FIELDS)


def _copy_row(data: bytes) -> dict:
    values = data.decode().removesuffix("\n").split("\t")
    return {
        field: None if value == "\\N" else load(value)
        for field, load, value in zip(REPORT_FIELDS, _REPORT_TYPES, values, strict=True)
    }


# --- the same rows summed per month and plan (finance's month page, its summaries, the trends) -------
#
# Three statements instead of one aggregate over REPORT_ROWS_SQL, for a month of a million periods: the
# plan's allowances read first (once per plan, not per period); then the month's periods summed per
# stamped plan by a parallel scan (plan_id is a plain column; a period with no stamp is summed in the
# line of no plan, as the report lists it); then the credit drawn per plan, over the month's draws.
# The rule per period is REPORT_ROWS_SQL's (the same allowance; overage = usage beyond it, period by
# period, summed over the periods above it only, an unlimited allowance's NULL above none; credit drawn
# = the draws within the period, of kind usage); tests compare the two plan by plan.

_ALLOWANCES = """
SELECT pl.id, pl.code, billing_plan_allowance(pl, 'ai_interaction')::bigint,
       billing_plan_allowance(pl, 'minutes')::bigint
FROM plans pl
"""


def _sums(plan: str, source: str, group: str) -> str:
    return f"""
SELECT t.month, {plan} AS plan_id, {group}, count(*), coalesce(sum(t.active_projects_count), 0),
       coalesce(sum(t.ai_interactions_count), 0),
       coalesce(sum(t.ai_interactions_count - a.ai_allowance) FILTER (WHERE t.ai_interactions_count > a.ai_allowance), 0),
       coalesce(sum(t.minutes_used), 0),
       coalesce(sum(t.minutes_used - a.minutes_allowance) FILTER (WHERE t.minutes_used > a.minutes_allowance), 0),
       max(t.period_end), count(*) FILTER (WHERE t.period_end > now())
FROM {source}
LEFT JOIN unnest(%(ids)s::bigint[], %(ai)s::bigint[], %(minutes)s::bigint[])
     AS a(id, ai_allowance, minutes_allowance) ON a.id = {plan}
GROUP BY 1, 2, 3
"""


_STAMPED = _sums("t.plan_id", "usage_tracking t", "NULL::bigint[]").replace(
    "GROUP BY 1, 2, 3",
    "WHERE t.month = ANY(%(months)s) AND (%(plan)s::bigint IS NULL OR t.plan_id = %(plan)s)\nGROUP BY 1, 2",
)
_DRAWN = f"""
SELECT t.month, {period_plan_sql("t")}, sum(d.quantity) FILTER (WHERE g.metric = 'ai_interaction'),
       sum(d.quantity) FILTER (WHERE g.metric = 'minutes')
FROM credit_draws d
JOIN usage_tracking t ON t.customer_id = d.customer_id
 AND d.drawn_at >= t.period_start AND d.drawn_at < t.period_end
JOIN credit_grants g ON g.id = d.grant_id
WHERE t.month = ANY(%(months)s) AND d.kind = 'usage'
  AND d.drawn_at >= (%(first)s || '-01 00:00:00+00')::timestamptz
GROUP BY 1, 2
"""

# What the trends read of a month not summarized: the usage per stamped plan, and nothing else (no
# allowance, overage, credit or running periods: a month of a million periods summed in about half the
# time of months_by_plan's statement).
_USED = f"""
SELECT t.month, {period_plan_sql("t")}, coalesce(sum(t.ai_interactions_count), 0), coalesce(sum(t.minutes_used), 0)
FROM usage_tracking t
WHERE t.month = ANY(%(months)s)
GROUP BY 1, 2
"""


def months_used_by_plan(months: list[str], *, using: str = "default") -> dict:
    """{month: [(plan code, AI interactions used, transcription minutes used)]} for the usage periods
    that started in each of ``months``: months_by_plan's used figures, by the same plan per period."""
    months = [month_parse(m) for m in months]
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT id, code FROM plans")
        codes = dict(cursor.fetchall())
        cursor.execute(render(_USED), {"months": months})
        rows = cursor.fetchall()
    out: dict = {month: {} for month in months}
    for month, plan_id, ai, minutes in rows:
        code = codes.get(plan_id)
        was_ai, was_minutes = out[month].get(code, (0, 0))
        out[month][code] = (was_ai + ai, was_minutes + minutes)
    return {month: [(code, *used) for code, used in per_plan.items()] for month, per_plan in out.items()}


# One plan's figures for a month, in this order (the summaries keep the same).
BY_PLAN_FIELDS = (
    "plan",
    "periods",
    "active_projects",
    "ai_used",
    "ai_allowance",
    "ai_overage",
    "ai_from_credit",
    "minutes_used",
    "minutes_allowance",
    "minutes_overage",
    "minutes_from_credit",
)


def months_by_plan(months: list[str], plan_code: str | None = None, *, using: str = "default") -> dict:
    """{month: [figures per plan, in BY_PLAN_FIELDS order]} for the usage periods that started in each
    of ``months`` (``plan_code``: that plan's only): what usage_report --month's rows sum to, per plan.
    A plan's allowance over the periods is None when the plan has no limit on the metric (the trends,
    which read only what was used, read months_used_by_plan)."""
    return _months_by_plan(months, plan_code, using=using)[0]


@dataclass
class LiveMonth:
    """A month summed from its periods as they are now (months_by_plan's figures), and how many of
    those periods are still running: the figures move until the last of them ends."""

    figures: list  # per plan, in BY_PLAN_FIELDS order
    running: int  # periods not ended yet
    last_end: datetime | None  # when the last of them ends (None: no period)


def month_live(month: str, plan_code: str | None = None, *, using: str = "default") -> LiveMonth:
    """months_by_plan for one month, with how long its periods still run (read in the same scan)."""
    figures, ends = _months_by_plan([month], plan_code, using=using)
    month = month_parse(month)
    running, last_end = ends.get(month, (0, None))
    return LiveMonth(figures[month], running, last_end)


def _months_by_plan(months: list[str], plan_code: str | None, *, using: str) -> tuple[dict, dict]:
    """(months_by_plan's figures, {month: (periods still running, the last period's end)})."""
    months = [month_parse(m) for m in months]
    with connections[using].cursor() as cursor:
        cursor.execute(render(_ALLOWANCES))
        plans = {pid: (code, ai, minutes) for pid, code, ai, minutes in cursor.fetchall()}
        wanted = next((pid for pid, (code, *_) in plans.items() if code == plan_code), None)
        if plan_code is not None and wanted is None:
            return {month: [] for month in months}, {}
        arrays = {
            "ids": list(plans),
            "ai": [a for _, a, _ in plans.values()],
            "minutes": [m for _, _, m in plans.values()],
        }
        cursor.execute(render(_STAMPED), {**arrays, "months": months, "plan": wanted})
        rows = cursor.fetchall()
        cursor.execute(render(_DRAWN), {"months": months, "first": min(months)})
        drawn = {
            (month, plan_id): (ai or 0, minutes or 0) for month, plan_id, ai, minutes in cursor.fetchall()
        }
    out = {month: {} for month in months}
    ends = {}
    for month, plan_id, _, periods, projects, ai, ai_over, minutes, minutes_over, last_end, running in rows:
        was_running, was_last = ends.get(month, (0, None))
        ends[month] = (was_running + running, max(filter(None, (was_last, last_end)), default=None))
        code, ai_allowance, minutes_allowance = plans.get(plan_id, (None, None, None))
        known = plan_id in plans
        figures = out[month].setdefault(plan_id if known else None, [code, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        figures[1] += periods
        figures[2] += projects
        figures[3] += ai
        figures[5] += ai_over
        figures[7] += minutes
        figures[9] += minutes_over
        figures[4] = None if not known or ai_allowance is None else ai_allowance * figures[1]
        figures[8] = None if not known or minutes_allowance is None else minutes_allowance * figures[1]
    for (month, plan_id), (ai, minutes) in drawn.items():
        key = plan_id if plan_id in plans else None
        if key in out.get(month, {}):
            out[month][key][6] += ai
            out[month][key][10] += minutes
    return {month: list(per_plan.values()) for month, per_plan in out.items()}, ends


FIRST_MONTH = EARLIEST.strftime("%Y-%m")  # no usage period starts before the horizon (usage/horizon.py)
MONTHS_AHEAD = 12  # periods open a month ahead at most; a year leaves room for clocks and cron


MONTH_FORMAT = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def month_parse(value: str) -> str:
    """A report month, YYYY-MM, from FIRST_MONTH to a year after this month (ValueError otherwise)."""
    if re.fullmatch(r"\d{4}-\d{2}", value or "") and not MONTH_FORMAT.fullmatch(value):
        raise ValueError(f"month {value} does not exist: a month is 01 to 12 (e.g. 2026-11)")
    if not MONTH_FORMAT.fullmatch(value or ""):
        raise ValueError(f"month must be YYYY-MM (e.g. 2026-11), not {echo(value)}")
    today = timezone.now()
    year, month = divmod(today.year * 12 + today.month - 1 + MONTHS_AHEAD, 12)
    last = f"{year:04d}-{month + 1:02d}"
    if not FIRST_MONTH <= value <= last:
        raise ValueError(f"month {value} is out of range: from {FIRST_MONTH} to {last}")
    return value


def usage_report(month: str, using: str = "default") -> Iterator[dict]:
    month = month_parse(month)
    with connections[using].cursor() as cursor:
        cursor.execute(render(_ALLOWANCES))
        plans = cursor.fetchall()
        params = {
            "month": month,
            "ids": [pid for pid, *_ in plans],
            "codes": [code for _, code, *_ in plans],
            "ai": [ai for *_, ai, _ in plans],
            "minutes": [minutes for *_, minutes in plans],
        }
        # psycopg's own cursor (Django's has no COPY); its errors raised as Django's, as a query's are.
        with connections[using].wrap_database_errors, cursor.cursor.copy(render(_REPORT), params) as copy:
            for data in copy:
                yield _copy_row(bytes(data))
