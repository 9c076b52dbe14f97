"""Finance's statements over a million usage periods may run in parallel (SPEC §11): the read-only SQL
functions they call are PARALLEL SAFE. PostgreSQL takes the default, PARALLEL UNSAFE, to mean the
function may write, and one such call anywhere in a statement (even one it inlines) keeps the whole
statement in one process: the over-limit page at 1M scanned its million current periods and joined the
live subscriptions on one of the machine's two cores (CONTRIBUTING.md, "SQL ships safely")."""

import pytest
from django.db import connection

from billing.finance.selectors import _OVER_LIMIT_PAGE, _plan_allowances
from usage.names import render

pytestmark = pytest.mark.django_db

READ_ONLY = (
    "usage_period_current",
    "usage_metrics",
    "billing_live_by_customer",
    "billing_live_plan",
    "billing_plan_allowance",
)


def test_the_read_only_functions_finance_reads_through_are_parallel_safe():
    with connection.cursor() as cursor:
        cursor.execute("SELECT proname, proparallel FROM pg_proc WHERE proname = ANY(%s)", [list(READ_ONLY)])
        assert dict(cursor.fetchall()) == dict.fromkeys(READ_ONLY, "s")


def test_the_over_limit_statement_may_scan_the_periods_in_parallel():
    """With parallel workers as cheap as they are on a big table, the planner picks a parallel scan of
    usage_tracking for the over-limit page (it could not: every plan was serial)."""
    with connection.cursor() as cursor:
        for setting in (
            "parallel_setup_cost = 0",
            "parallel_tuple_cost = 0",
            "min_parallel_table_scan_size = 0",
            "min_parallel_index_scan_size = 0",
            "max_parallel_workers_per_gather = 2",
            "enable_indexscan = off",
            "enable_bitmapscan = off",
        ):
            cursor.execute(f"SET LOCAL {setting}")
        cursor.execute("EXPLAIN " + render(_OVER_LIMIT_PAGE), {**_plan_allowances(), "limit": 101})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Gather" in plan and "Parallel Seq Scan on usage_tracking" in plan, plan
