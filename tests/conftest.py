import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection, transaction

from billing.db import psycopg_connect
from billing.ops.checks import drift_rows

ROOT = Path(__file__).resolve().parent.parent


def _flush_past_the_audit_guard():
    """audit_log refuses TRUNCATE for every role (SPEC §10). Between transactional tests the suite's
    superuser empties every table in replica mode, where ordinary triggers do not fire (no app role
    can set it)."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    flush = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        return flush(self, ["SET LOCAL session_replication_role = replica", *sql_list])

    DatabaseOperations.execute_sql_flush = execute_sql_flush


_flush_past_the_audit_guard()


def report_rows(customer_ids=None) -> list[dict]:
    """Every drifted counter as the discrepancy report lists it: the report under test, never a referee.

    Tests of the invariants use tests/referee.py, which shares no code with the report.
    """
    return drift_rows(customer_ids)


@contextmanager
def raises_sqlstate(exception: type[Exception], sqlstate: str, match: str | None = None):
    """The statement fails with exactly this Django exception type and PostgreSQL SQLSTATE.

    Wrapped in a savepoint, so the test's transaction carries on after the error.
    """
    with pytest.raises(exception, match=match) as caught, transaction.atomic():
        yield caught
    assert type(caught.value) is exception, f"{type(caught.value).__name__} is not {exception.__name__}"
    assert getattr(caught.value.__cause__, "sqlstate", None) == sqlstate, (
        f"SQLSTATE {getattr(caught.value.__cause__, 'sqlstate', None)} is not {sqlstate}: {caught.value}"
    )


def active_count(customer) -> int:
    """active_projects_count of the customer's period that contains now(), 0 without a row."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT active_projects_count FROM usage_tracking WHERE customer_id = %s "
            "AND period_start <= now() AND period_end > now()",
            [customer.pk],
        )
        row = cursor.fetchone()
    return row[0] if row else 0


def raw_connect(**kwargs) -> psycopg.Connection:
    """A new real connection to the test database, outside Django (threads, other services)."""
    return psycopg_connect(**kwargs)


def blocked_by(pid: int, *, unless=None, timeout: float = 30) -> int | None:
    """Wait until the server shows a backend waiting on a lock that backend ``pid`` holds; its pid.

    This is how concurrency tests force their overlap deterministically, never by sleeping and
    hoping. ``unless`` is the thread expected to wait: if it ends first, nobody waited and None is
    returned (the test's own assertions then say what went wrong).
    """
    deadline = time.monotonic() + timeout
    with raw_connect(autocommit=True) as watcher:
        while True:
            row = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid)) LIMIT 1", [pid]
            ).fetchone()
            if row:
                return row[0]
            if unless is not None and not unless.is_alive():
                return None
            assert time.monotonic() < deadline, f"no backend waited on {pid} within {timeout} s"
            time.sleep(0.005)


def waiting(pid: int, *, unless=None, timeout: float = 30) -> bool:
    """Wait until backend ``pid`` is blocked on a lock someone else holds (False: ``unless`` ended first)."""
    deadline = time.monotonic() + timeout
    with raw_connect(autocommit=True) as watcher:
        while not watcher.execute("SELECT cardinality(pg_blocking_pids(%s)) > 0", [pid]).fetchone()[0]:
            if unless is not None and not unless.is_alive():
                return False
            assert time.monotonic() < deadline, f"backend {pid} never waited within {timeout} s"
            time.sleep(0.005)
    return True


def manage_env() -> dict:
    """Environment in which a manage.py subprocess uses this test database."""
    env = dict(os.environ)
    name = connection.settings_dict["NAME"]
    if env.get("DATABASE_URL"):
        url = urlsplit(env["DATABASE_URL"])
        env["DATABASE_URL"] = urlunsplit(url._replace(path=f"/{name}"))
    else:
        env["EMBEDDED_DBNAME"] = name
    return env


def run_manage(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        capture_output=True,
        text=True,
        env=env or manage_env(),
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.fixture
def customer(db):
    from tests.factories import CustomerFactory

    return CustomerFactory()


def plant_s1(prefix="s1"):
    """The three S1 customers (SPEC §9), planted the way the demo plants them."""
    from demo.data import plans_ensure, s1_plant

    return s1_plant(
        free_plan=plans_ensure()["free"],
        emails={key: f"{prefix}-{key}@example.com" for key in ("six", "phantom", "missing")},
    )


@pytest.fixture
def roles(db):
    """The Support and Finance groups, as the data migration makes them (transactional tests flush them)."""
    import importlib

    from django.apps import apps

    importlib.import_module("billing.migrations.0002_roles").create_roles(apps, None)
    importlib.import_module("billing.migrations.0004_audit_roles").audit_log_readable(apps, None)
    importlib.import_module("billing.migrations.0006_credit_webhook_roles").credit_and_webhook_roles(
        apps, None
    )


@pytest.fixture
def staff_client(django_user_model, roles):
    """A logged-in test client for a new staff user in a role group: staff_client("sam", "Support")."""
    from django.contrib.auth.models import Group
    from django.test import Client

    def make(username, group):
        user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        client = Client()
        client.force_login(user)
        return client

    return make
