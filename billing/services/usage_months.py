"""Finance's month summaries (SPEC §7 Finance, §11): for each closed month, per plan, the figures the
month page shows, so the month page and the trends read a few rows instead of a million usage periods.

A month is closed when every usage period that started in it has ended. Since a period carries the
plan in effect for it (usage_tracking.plan_id), a closed month's figures change only when one of its
periods does: a late event or a recount of an ended period, a period of a past month opened or
deleted (usage_tracking's row triggers note the month in usage_months_changed; their WHEN clauses are
false for every counter update of a current period), or a plan edited (an allowance: plans' trigger
notes every summarized month, and the month is rebuilt with the plan as it is, as usage_report
reads it). A noted month is computed from the periods by the pages, as an unsummarized one is, until
it is summarized again: the pages never show a figure the command would not.

Written here only: by cron (roll_usage_periods, after it rolls: every closed month not summarized or
noted since) and by a reconciliation that set a counter of a summarized month right (that month is
rebuilt when the run ends). Never by the finance pages, which only read.
"""

from dataclasses import dataclass
from typing import Any

from django.db import connection, connections, transaction

from billing.ops.usage_report import FIRST_MONTH, months_by_plan
from usage.names import render

# One writer at a time (cron and a reconciliation may both rebuild): a transaction-scoped advisory lock.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('billing_usage_months'))"

# The first month not known to be closed: the month of the earliest-starting period that has not ended
# (the period_end index), else the current month (UTC). Every month before it is closed.
_OPEN_FROM = """
SELECT least(
    (SELECT to_char(min(t.period_start) AT TIME ZONE 'UTC', 'YYYY-MM') FROM usage_tracking t
     WHERE t.period_end > now()),
    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM'))
"""

_FIRST = "SELECT min(t.month) FROM usage_tracking t"

# The summarized months still exact: summarized, and not noted as changed since.
_CURRENT = """
SELECT s.period_month FROM billing_usage_months s
WHERE s.period_month = ANY(%(months)s)
  AND NOT EXISTS (SELECT 1 FROM usage_months_changed c WHERE c.period_month = s.period_month)
"""

_WRITE = """
INSERT INTO billing_usage_month_plans (
    period_month, plan, periods, active_projects, ai_used, ai_allowance, ai_overage, ai_from_credit,
    minutes_used, minutes_allowance, minutes_overage, minutes_from_credit)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


@dataclass
class Summarized:
    built: list[str]  # months (re)summarized
    open_from: str  # the first month not known to be closed ("": not looked up, nothing to rebuild)


def _month_after(month: str) -> str:
    year, mon = (int(part) for part in month.split("-"))
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def summarized_months(months: list[str], *, using: str = "default") -> set[str]:
    """Which of ``months`` have a summary that is still exact (no change noted since it was built)."""
    with connections[using].cursor() as cursor:
        cursor.execute(_CURRENT, {"months": list(months)})
        return {row[0] for row in cursor.fetchall()}


def _summarize(cursor: Any, months: list[str]) -> None:
    """(Re)build these months' summaries, in the caller's transaction. Each month's change note is
    deleted first, then the periods are read by later statements (a newer snapshot): a change that
    commits before that read is in the figures, and one still running holds the note's row (its ON
    CONFLICT DO UPDATE), so this waits for it or the note survives for the next build."""
    cursor.execute("DELETE FROM usage_months_changed WHERE period_month = ANY(%s)", [months])
    cursor.execute("DELETE FROM billing_usage_month_plans WHERE period_month = ANY(%s)", [months])
    cursor.execute("DELETE FROM billing_usage_months WHERE period_month = ANY(%s)", [months])
    cursor.executemany(
        "INSERT INTO billing_usage_months (period_month, built_at) VALUES (%s, now())", [[m] for m in months]
    )
    rows = [[month, *figures] for month, per_plan in months_by_plan(months).items() for figures in per_plan]
    if rows:
        cursor.executemany(_WRITE, rows)


def usage_months_summarize(*, rebuild_only: bool = False) -> Summarized:
    """Summarize every closed month that has no exact summary (``rebuild_only``: only the summarized
    months noted as changed since), in one transaction."""
    with connection.cursor() as cursor:
        if rebuild_only:
            # Two small tables first: a reconciliation that changed no summarized month (a support
            # recount of one customer's current period) costs one query, not the scan for open periods.
            cursor.execute(
                "SELECT s.period_month FROM billing_usage_months s JOIN usage_months_changed c"
                " ON c.period_month = s.period_month ORDER BY 1"
            )
            noted = [row[0] for row in cursor.fetchall()]
            if not noted:
                return Summarized([], "")
        cursor.execute(render(_OPEN_FROM))
        open_from = cursor.fetchone()[0]
        if rebuild_only:
            todo = [m for m in noted if m < open_from]  # a month no longer closed is left noted
        else:
            cursor.execute(render(_FIRST))
            first = cursor.fetchone()[0]
            months, month = [], max(first or open_from, FIRST_MONTH)
            while month < open_from:
                months.append(month)
                month = _month_after(month)
            exact = summarized_months(months)
            todo = [m for m in months if m not in exact]
    if todo:  # one transaction, one scan of the periods for all of them
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_LOCK)
            _summarize(cursor, todo)
    return Summarized(todo, open_from)
