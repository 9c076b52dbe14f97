"""Upgrades (SPEC §13): a database migrated by an earlier commit and then upgraded by `migrate` on this
code ends with exactly the functions and triggers of a fresh install, and check_triggers calls it healthy.

The earlier state is built by that commit's own code (`git archive` into a temporary folder, its own
`manage.py migrate`), so its migrations apply the SQL of that time, as a real deployment did.
"""

import os
import subprocess
import sys
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

# Migration 0005 shipped billing_consume here; the .sql file it reads was edited twice afterwards.
SHIPPED_BEFORE_EDITS = "4f2060b"
# Main before issues 9-13's last passes (2026-12-05), which edited the shipped definitions of
# billing_consume, billing_live_plan, billing_period_roll, usage_tracking_add and usage_tracking_open
# in place: a database migrated there must take them at the next migrate.
SHIPPED_BEFORE_IN_PLACE_EDITS = "b1f7ec6"
# Main before the last two passes on issues 11 and 12 (2026-12-05), which edited billing_live_by_customer,
# billing_live_plan, billing_plan_allowance and usage_period_current (PARALLEL SAFE), billing_period_roll
# (stamps the plan), usage_tracking_add and usage_tracking_open in place, and added billing 0018/0020 and
# usage 0022 with their triggers.
SHIPPED_BEFORE_PLAN_STAMP = "df0a9fe"
# Main before every period was stamped as it opens (2026-12-05, evening), which edited billing_period_roll
# in place (the opening trigger stamps now) and added billing 0021/0024 and usage 0024.
SHIPPED_BEFORE_STAMP_AT_OPEN = "c8c8a38"

FUNCTIONS = """
SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid)
FROM pg_proc p
WHERE p.pronamespace = current_schema()::regnamespace AND p.prokind = 'f'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
"""
TRIGGERS = """
SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal
"""


def _demo_at(commit: str) -> list[str]:
    """The demo app, installed since the demo data moved there; absent at older commits."""
    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}:demo"], capture_output=True)
    return ["demo"] if found.returncode == 0 else []


def _params(dbname=None) -> dict:
    params = connection.get_connection_params()
    for django_only in ("cursor_factory", "context", "server_side_binding", "prepare_threshold"):
        params.pop(django_only, None)
    if dbname:
        params["dbname"] = dbname
    return params


def _url(dbname: str) -> str:
    if os.environ.get("DATABASE_URL"):
        return urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{dbname}"))
    p = _params()
    auth = quote(p.get("user") or "postgres") + (f":{quote(p['password'])}" if p.get("password") else "")
    return f"postgres://{auth}@/{dbname}?host={quote(str(p['host']))}&port={p.get('port') or 5432}"


def _migrate(cwd, dbname: str, settings: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("EMBEDDED_DBNAME", "DJANGO_SETTINGS_MODULE")}
    env.update(DATABASE_URL=_url(dbname), DJANGO_SETTINGS_MODULE=settings)
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "--verbosity", "0"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"migrate in {cwd} failed:\n{result.stdout}\n{result.stderr}"


def _definitions(dbname: str) -> dict[str, str]:
    with psycopg.connect(**_params(dbname)) as conn:
        rows = conn.execute(FUNCTIONS).fetchall() + conn.execute(TRIGGERS).fetchall()
    return dict(rows)


@pytest.fixture
def databases():
    """Empty databases on the test server, dropped afterwards."""
    made = []

    def make() -> str:
        name = f"upgrade_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(**_params(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return name

    yield make
    with psycopg.connect(**_params(), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    "shipped",
    [
        SHIPPED_BEFORE_EDITS,
        SHIPPED_BEFORE_IN_PLACE_EDITS,
        SHIPPED_BEFORE_PLAN_STAMP,
        SHIPPED_BEFORE_STAMP_AT_OPEN,
    ],
)
def test_a_database_migrated_at_an_earlier_commit_upgrades_to_exactly_a_fresh_install(
    databases, tmp_path, shipped
):
    old_tree = tmp_path / "old"
    old_tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", shipped, "manage.py", "billing", "usage", *_demo_at(shipped)],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive.stdout, check=True)

    upgraded = databases()
    _migrate(old_tree, upgraded, "billing.settings")
    before = _definitions(upgraded)
    _migrate(ROOT, upgraded, "tests.settings")

    fresh = databases()
    _migrate(ROOT, fresh, "tests.settings")

    expected, got = _definitions(fresh), _definitions(upgraded)
    assert sorted(got) == sorted(expected)
    differing = sorted(name for name in expected if got[name] != expected[name])
    assert differing == []
    # The test is about something: the earlier state really was different.
    assert before != expected

    env = {k: v for k, v in os.environ.items() if k != "EMBEDDED_DBNAME"}
    env["DATABASE_URL"] = _url(upgraded)
    check = subprocess.run(
        [sys.executable, "manage.py", "check_triggers"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "broken" not in check.stdout
