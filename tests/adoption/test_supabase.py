"""Adopting the Supabase shape through the name mapping (issue 13, deliver 2 and 3; SPEC §2).

users(id, email), user_id everywhere, usage_tracking keyed by a 'YYYY-MM' month with counter names of
its own, presets.usage_count, preset_usage, no usage-events table, the product's own counter trigger
and RPC function: docs/adoption/supabase-names.json names it all; adopt adds the period bounds beside
the month (filled from it), billing-ops' own usage_events with one opening-balance event per metered
counter (audited), the constraints and the triggers. Built by raw DDL with data and planted drift.
"""

import json
import re

import psycopg
import pytest

from tests.adoption import product
from tests.adoption.conftest import APP_ROLE, build, drop
from tests.adoption.test_adoption import by_subject, catalog
from tests.conftest import ROOT

NAMES = ROOT / "docs" / "adoption" / "supabase-names.json"
# The product's own columns of each table: adoption may add columns, never change these.
PRODUCT_COLUMNS = {
    "users": "id, email, created_at",
    "projects": "id, user_id, name, status, created_at, updated_at",
    "usage_tracking": "id, user_id, month, projects_count, ai_interactions, transcription_minutes, updated_at",
    "presets": "id, user_id, name, usage_count, created_at",
    "preset_usage": "id, preset_id, user_id, used_at",
}
# Planted: what the report must find (check, email, tracked, actual), and nothing else.
PLANTED = sorted(
    [("active_projects", f"u{i}@supa.example", "2", "1") for i in range(1, 11) if i != 4]
    + [
        ("active_projects", "u4@supa.example", "0", "1"),  # no usage_tracking row this month
        ("preset_usage_count", "u2@supa.example", "5", "1"),
    ]
)
DRIFT = """
UPDATE presets SET usage_count = 5 WHERE user_id = (SELECT id FROM users WHERE email = 'u2@supa.example');
DELETE FROM usage_tracking WHERE user_id = (SELECT id FROM users WHERE email = 'u4@supa.example');
-- A counter with no source rows is its own truth at adoption: it becomes an opening balance (a
-- negative one carries its reason), not drift.
UPDATE usage_tracking SET transcription_minutes = -1.5
WHERE user_id = (SELECT id FROM users WHERE email = 'u3@supa.example');
"""


@pytest.fixture
def supabase_named():
    db = build(product.SUPABASE_DDL, product.SUPABASE_DATA, DRIFT)
    db.names_file = NAMES
    yield db
    drop(db)


# The same product under other names again (the check uses "other names, data and drift").
OTHER_NAMES = {
    "users": "accounts",
    "user_id": "account_id",
    "projects": "workspaces",
    "usage_tracking": "usage_monthly",
    "month": "period_key",
    "projects_count": "workspaces_count",
    "ai_interactions": "ai_calls",
    "transcription_minutes": "minutes_total",
    "presets": "templates",
    "preset_usage": "template_uses",
    "preset_id": "template_id",
    "usage_count": "uses",
    "usage_events": "usage_log",
    "on_preset_used": "on_template_used",
    "increment_preset_usage": "bump_template",
    "increment_ai_usage": "bump_ai",
}
OTHER_MAPPING = {
    "tables": {
        "customers": "accounts",
        "projects": "workspaces",
        "presets": "templates",
        "preset_usage": "template_uses",
        "usage_events": "usage_log",
        "usage_tracking": "usage_monthly",
    },
    "columns": {
        **{
            f"{t}.customer_id": "account_id"
            for t in ("projects", "presets", "preset_usage", "usage_events", "usage_tracking")
        },
        "preset_usage.preset_id": "template_id",
        "presets.usage_count": "uses",
        "usage_tracking.month": "period_key",
        "usage_tracking.active_projects_count": "workspaces_count",
        "usage_tracking.ai_interactions_count": "ai_calls",
        "usage_tracking.minutes_used": "minutes_total",
    },
    "uuid_ids": ["usage_tracking"],
}


def other_names(sql: str) -> str:
    return re.sub(r"\b(" + "|".join(OTHER_NAMES) + r")\b", lambda m: OTHER_NAMES[m[1]], sql)


@pytest.fixture(params=["supabase", "other names"])
def shape(request, tmp_path):
    n = (lambda sql: sql) if request.param == "supabase" else other_names
    db = build(*(n(sql) for sql in (product.SUPABASE_DDL, product.SUPABASE_DATA, DRIFT)))
    if request.param == "supabase":
        db.names_file = NAMES
    else:
        db.names_file = tmp_path / "names.json"
        db.names_file.write_text(json.dumps(OTHER_MAPPING))
    yield db, n
    drop(db)


def check(db, *args):
    result = db.manage("adopt", "--check", "--format", "json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def product_rows(db, n=lambda sql: sql) -> dict[str, str]:
    """The product's own columns of every row, hashed per table."""
    return {
        t: db.sql(
            n(
                f"SELECT count(*) || ':' || md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) "
                f"FROM (SELECT {columns} FROM {t}) r"
            )
        )[0][0]
        for t, columns in PRODUCT_COLUMNS.items()
    }


def report(db) -> tuple[list, dict]:
    result = db.manage("usage_discrepancies", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = sorted((r["check"], r["email"], str(r["tracked"]), str(r["actual"])) for r in doc["discrepancies"])
    return rows, doc


def test_check_of_the_supabase_shape_names_what_adopt_adds(supabase_named):
    code, doc = check(supabase_named)
    assert code == 1
    assert set(by_subject(doc, "blocker")) == {"trigger on_preset_used on preset_usage"}
    code, doc = check(supabase_named, "--drop-product-counter-triggers")
    assert code == 0, doc
    adds = by_subject(doc, "adds")
    assert {
        "users.name",
        "users.current_period_start",
        "users.current_period_end",
        "presets.last_used_at",
        "usage_tracking.period_start",
        "usage_tracking.period_end",
        "usage_events",
        "opening balances",
        "usage_tracking usage_tracking_customer_period",
        "usage_tracking usage_tracking_periods_disjoint",
        "trigger on_preset_used on preset_usage",
    } <= set(adds)
    assert adds["usage_tracking.period_start"]["fix"] == (
        "ALTER TABLE usage_tracking ADD COLUMN period_start timestamp with time zone; "
        "UPDATE usage_tracking SET period_start = ((month || '-01')::timestamp AT TIME ZONE 'UTC'); "
        "ALTER TABLE usage_tracking ALTER COLUMN period_start SET NOT NULL;"
    )
    assert adds["usage_tracking usage_tracking_customer_period"]["fix"] == (
        'ALTER TABLE "usage_tracking" ADD CONSTRAINT "usage_tracking_customer_period" '
        'UNIQUE ("user_id", "period_start");'
    )
    assert "pgtrigger_" not in adds["usage_events"]["fix"]  # its triggers come last, after the balances
    # Without the mapping the same database is refused, naming the mapping.
    supabase_named.names_file = None
    code, doc = check(supabase_named)
    assert code == 1 and "users" not in doc["items"][0]["subject"]
    assert "BILLING_OPS_NAMES_FILE" in by_subject(doc, "blocker")["customers"]["fix"]


def test_a_month_that_is_not_yyyy_mm_is_a_blocker(supabase_named):
    supabase_named.sql(
        "UPDATE usage_tracking SET month = '2026-13' WHERE ctid = (SELECT min(ctid) FROM usage_tracking)"
    )
    code, doc = check(supabase_named, "--drop-product-counter-triggers")
    assert code == 1
    assert (
        "1 row(s) have a month that is not 'YYYY-MM'"
        in by_subject(doc, "blocker")["usage_tracking.period_start"]["problem"]
    )


def test_adopt_end_to_end(shape):
    """The Supabase shape, and the same product under other names again (its own mapping)."""
    db, n = shape

    def q(sql, params=None, **kwargs):
        return db.sql(n(sql), params, **kwargs)

    before, rows_before = catalog(db), product_rows(db, n)
    ai_before = dict(
        q("SELECT u.email, t.ai_interactions FROM usage_tracking t JOIN users u ON u.id = t.user_id")
    )

    result = db.manage("adopt", "--drop-product-counter-triggers")
    assert result.returncode == 0, result.stdout + result.stderr
    assert product_rows(db, n) == rows_before  # only columns were added
    assert q(
        "SELECT count(*) FROM usage_tracking WHERE period_start IS NULL OR period_end <= period_start"
    ) == [(0,)]

    # Opening balances: one event per customer and period with a non-zero counter, each audited.
    events = q(
        "SELECT u.email, e.metric, e.quantity, e.occurred_at = t.period_start FROM usage_events e "
        "JOIN users u ON u.id = e.user_id JOIN usage_tracking t ON t.user_id = e.user_id ORDER BY 1, 2"
    )
    expected = sorted(
        [(email, "ai_interaction", n, True) for email, n in ai_before.items()]
        + [("u3@supa.example", "minutes", -1.5, True)]
    )
    assert [(e, m, float(q), at) for e, m, q, at in events] == [
        (e, m, float(q), at) for e, m, q, at in expected
    ]
    assert q("SELECT count(*) FROM audit_log WHERE action = 'opening_balance'") == [(len(expected),)]

    result = db.manage("check_triggers")
    assert result.returncode == 0, result.stdout + result.stderr

    found, doc = report(db)
    assert found == PLANTED
    result = db.manage("reconcile_usage", "--apply")
    assert result.returncode == 0, result.stdout + result.stderr
    found, _ = report(db)
    assert found == []

    # The product's raw writes, as its own role: every counter follows.
    q(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}")
    u1 = q("SELECT id FROM users WHERE email = 'u1@supa.example'")[0][0]
    q("INSERT INTO projects (user_id, name) VALUES (%s, 'second')", [u1], role=APP_ROLE)
    q(
        "INSERT INTO preset_usage (preset_id, user_id) SELECT id, user_id FROM presets WHERE user_id = %s",
        [u1],
        role=APP_ROLE,
    )
    q(
        "INSERT INTO usage_events (user_id, metric, quantity) VALUES (%s, 'ai_interaction', 1)",
        [u1],
        role=APP_ROLE,
    )
    q("INSERT INTO users (email) VALUES ('new@supa.example')", role=APP_ROLE)
    new = q("SELECT id FROM users WHERE email = 'new@supa.example'")[0][0]
    q("INSERT INTO projects (user_id, name) VALUES (%s, 'first')", [new], role=APP_ROLE)
    with pytest.raises(psycopg.errors.CheckViolation):
        q("SELECT increment_ai_usage(%s)", [u1], role=APP_ROLE)  # its own counter write: refused
    assert q(
        "SELECT projects_count, ai_interactions FROM usage_tracking WHERE user_id = %s AND month = to_char(now(), 'YYYY-MM')",
        [u1],
    ) == [(2, ai_before["u1@supa.example"] + 1)]
    assert q("SELECT usage_count FROM presets WHERE user_id = %s", [u1]) == [(2,)]
    assert q("SELECT projects_count FROM usage_tracking WHERE user_id = %s", [new]) == [(1,)]
    found, _ = report(db)
    assert found == []

    result = db.manage("adopt", "--uninstall")
    assert result.returncode == 0, result.stdout + result.stderr
    assert catalog(db) == before


PAGES = """
from django.contrib.auth.models import User
from django.test import Client
from usage.models import Customer, UsageTracking
User.objects.create_superuser("root", "root@ops.example", "a-long-enough-password-1")
client = Client()
client.login(username="root", password="a-long-enough-password-1")
customer, period = Customer.objects.order_by("email").first(), UsageTracking.objects.first()
for url in [
    "/admin/usage/customer/", f"/admin/usage/customer/{customer.pk}/change/", "/admin/usage/customer/?over=yes",
    "/admin/usage/customer/?projects=yes", "/admin/usage/customer/?plan=free", "/admin/usage/usagetracking/",
    f"/admin/usage/usagetracking/{period.pk}/change/", "/admin/usage/usagetracking/?plan=free",
    "/admin/usage/project/", "/admin/usage/preset/", "/admin/usage/usageevent/", "/admin/finance/usage/",
    "/admin/finance/over-limit/", "/admin/finance/usage.csv", "/healthz",
]:
    response = client.get(url, HTTP_HOST="localhost")
    print(response.status_code, url)
print("email", customer.email in client.get(f"/admin/usage/customer/{customer.pk}/change/", HTTP_HOST="localhost").content.decode())
"""


def test_the_pages_of_an_adopted_database_with_other_names(shape):
    """The same code serves the product's names: the admin, finance pages and health all answer."""
    supabase_named, _ = shape
    result = supabase_named.manage("adopt", "--drop-product-counter-triggers")
    assert result.returncode == 0, result.stdout + result.stderr
    result = supabase_named.manage("shell", "-c", PAGES)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line[:3].isdigit() or line.startswith("email")]
    assert [line for line in lines if not line.startswith(("200 ", "email"))] == [], result.stderr[-3000:]
    assert "email True" in lines
