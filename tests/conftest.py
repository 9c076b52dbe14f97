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
    """The three S1 customers (SPEC §9), planted the way the demo plants them."""
    from billing.services.demo import plans_ensure, s1_plant

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
    importlib.import_module("billing.migrations.0006_credit_webhook_roles").credit_and_webhook_roles(apps, None)


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
