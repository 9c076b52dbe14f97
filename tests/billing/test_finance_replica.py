"""Finance reads from a replica when one is configured (SPEC §12): DATABASE_REPLICA_URL makes a "replica"
alias and the finance pages and exports read through it; here it points at the same server."""

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from demo.data import demo_data_load
from tests.conftest import run_manage

PAGES = (
    "/admin/finance/usage/",
    "/admin/finance/usage.csv",
    "/admin/finance/over-limit/",
    "/admin/finance/over-limit.csv",
    "/admin/finance/credit/",
    "/admin/finance/credit.csv",
    "/admin/finance/trends/",
)
FINANCE_TABLES = ("usage_tracking", "credit_grants", "credit_draws", "reconciliation_runs", "plans")


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_pages_and_exports_read_through_the_replica_alias(settings, staff_client):
    demo_data_load(customers=3, seed=2)
    finance = staff_client("fay", "Finance")
    settings.FINANCE_DATABASE = "replica"
    with (
        CaptureQueriesContext(connections["replica"]) as replica,
        CaptureQueriesContext(connections["default"]) as primary,
    ):
        for url in PAGES:
            response = finance.get(url)
            assert response.status_code == 200, url
            if response.streaming:
                assert len(b"".join(response.streaming_content).splitlines()) > 1, url
    on_replica = " ".join(q["sql"] for q in replica.captured_queries)
    on_primary = " ".join(q["sql"] for q in primary.captured_queries)
    for table in FINANCE_TABLES:
        assert table in on_replica, table
        assert table not in on_primary, table  # the primary only serves the session and the login


def test_database_replica_url_makes_the_alias_and_a_bad_one_is_refused():
    shown = run_manage(
        "shell",
        "-c",
        "from django.conf import settings as s; print(s.FINANCE_DATABASE, s.DATABASES['replica']['HOST'])",
        env={**_env(), "DATABASE_REPLICA_URL": "postgres://reader:pw@replica.internal:5432/billing"},
    )
    assert shown.stdout.splitlines()[-1].split() == ["replica", "replica.internal"], shown.stderr
    bad = run_manage("check", env={**_env(), "DATABASE_REPLICA_URL": "mysql://reader@host/billing"})
    assert bad.returncode == 2 and "PostgreSQL URL" in bad.stderr and "Traceback" not in bad.stderr


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "DATABASE_REPLICA_URL"}
