import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection, transaction

from billing.db import psycopg_connect
from usage.services.integrity import drift_scan

ROOT = Path(__file__).resolve().parent.parent


def drift_rows(customer_ids=None) -> list[dict]:
    """Every drifted counter (I1-I3), as the discrepancy report computes it."""
    with transaction.atomic():
        return list(drift_scan(customer_ids).rows())


def assert_no_drift(customer_ids=None):
    drift = drift_rows(customer_ids)
    assert drift == [], f"counters drifted from their source rows: {drift}"


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
    """The three S1 customers (SPEC §9), written as history from before tracking existed."""
    import pgtrigger

    from billing.services.demo import plans_ensure
    from billing.models import Subscription
    from usage.models import Customer, Project, UsageTracking
    from usage.services.counters import counter_writes_allowed
    from django.db import transaction

    free = plans_ensure()["free"]
    made = {}
    with transaction.atomic():
        for key, email in (("six", f"{prefix}-six@example.com"), ("phantom", f"{prefix}-phantom@example.com"), ("missing", f"{prefix}-missing@example.com")):
            c = Customer.objects.create(email=email)
            c.refresh_from_db()
            Subscription.objects.create(customer=c, plan=free, current_period_start=c.current_period_start, current_period_end=c.current_period_end)
            made[key] = c
        with pgtrigger.ignore("usage.Project:projects_on_insert"):
            Project.objects.bulk_create([Project(customer=made["six"], name=f"imported {i}") for i in range(6)])
            Project.objects.bulk_create([Project(customer=made["missing"], name=f"legacy {i}") for i in range(2)])
        with counter_writes_allowed():
            for key, count in (("six", 0), ("phantom", 3)):
                c = made[key]
                UsageTracking.objects.create(customer=c, period_start=c.current_period_start, period_end=c.current_period_end,
                                             month=c.current_period_start.strftime("%Y-%m"), active_projects_count=count)
    return made


@pytest.fixture
def roles(db):
    """The Support and Finance groups, as the data migration makes them (transactional tests flush them)."""
    import importlib

    from django.apps import apps

    importlib.import_module("billing.migrations.0002_roles").create_roles(apps, None)
    importlib.import_module("billing.migrations.0004_audit_roles").audit_log_readable(apps, None)
