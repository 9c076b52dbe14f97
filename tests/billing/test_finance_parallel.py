"""Finance's statements over a million usage periods may run in parallel (SPEC §11): the read-only SQL
functions they call are PARALLEL SAFE. PostgreSQL takes the default, PARALLEL UNSAFE, to mean the
function may write, and one such call anywhere in a statement (even one it inlines) keeps the whole
statement in one process: the over-limit page at 1M scanned its million current periods and joined the
live subscriptions on one of the machine's two cores (CONTRIBUTING.md, "SQL ships safely")."""

import pytest
from django.db import connection

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
