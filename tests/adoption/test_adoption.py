"""Adopting a product database built by raw DDL (issue 13, SPEC §2), through manage.py as a team runs it.

Each product database is a database of its own on the test server (tests/adoption/conftest.py); the
commands run in subprocesses with DATABASE_URL pointing at it, as the README's steps do.
"""

import json
import re
import threading
import time

import psycopg
import pytest

from billing.adoption.catalog import catalog_snapshot
from tests.adoption import product
from tests.adoption.conftest import APP_ROLE, OWNER, build, drop

PRODUCT_TABLES = (
    "customers",
    "projects",
    "presets",
    "preset_usage",
    "usage_events",
    "usage_tracking",
    "product_audit",
)


# Columns billing-ops adds to a product table (adoption may add columns, never change the product's):
# the plan in effect for each usage period (billing 0018).
ADDED_COLUMNS = {"usage_tracking": ("plan_id",)}


def checksums(db, tables=PRODUCT_TABLES) -> dict[str, str]:
    """Every product row's own columns, as text, hashed per table: equal means byte-identical rows."""
    out = {}
    for t in tables:
        columns = [
            name
            for (name,) in db.sql(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                f" AND table_name = '{t}' ORDER BY ordinal_position"
            )
            if name not in ADDED_COLUMNS.get(t, ())
        ]
        out[t] = db.sql(
            f"SELECT count(*) || ':' || md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), ''))"
            f" FROM (SELECT {', '.join(columns)} FROM {t}) r"
        )[0][0]
    return out


def catalog(db) -> dict:
    with db.connect() as conn, conn.cursor() as cursor:
        return catalog_snapshot(cursor)


def preflight(db, role=OWNER) -> tuple[int, dict]:
    return preflight_args(db, role=role)


def preflight_args(db, *args, role=OWNER) -> tuple[int, dict]:
    result = db.manage("adopt", "--check", "--format", "json", *args, role=role)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def by_subject(doc, kind) -> dict[str, dict]:
    return {i["subject"]: i for i in doc["items"] if i["kind"] == kind}


def recount_drift(db) -> list:
    """An independent recount of every counter (no billing-ops code): rows where it disagrees."""
    return db.sql(
        """
        SELECT c.email, 'active', coalesce(t.active_projects_count, 0)::text, a.n::text
        FROM customers c LEFT JOIN usage_tracking t ON t.customer_id = c.id
             AND t.period_start <= now() AND t.period_end > now()
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM projects p WHERE p.customer_id = c.id AND p.status = 'active') AS a
        WHERE coalesce(t.active_projects_count, 0) <> a.n
        UNION ALL
        SELECT c.email, t.month, t.ai_interactions_count::text || '/' || t.minutes_used::text,
               s.ai::text || '/' || s.minutes::text
        FROM customers c JOIN usage_tracking t ON t.customer_id = c.id
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(quantity) FILTER (WHERE metric = 'ai_interaction'), 0) AS ai,
                   coalesce(sum(quantity) FILTER (WHERE metric = 'minutes'), 0) AS minutes
            FROM usage_events e WHERE e.customer_id = c.id
              AND e.occurred_at >= t.period_start AND e.occurred_at < t.period_end) AS s
        WHERE (t.ai_interactions_count, t.minutes_used) IS DISTINCT FROM (s.ai, s.minutes)
        UNION ALL
        SELECT p.name || '@' || p.customer_id, 'preset', p.usage_count::text, u.n::text
        FROM presets p
        CROSS JOIN LATERAL (SELECT count(*) AS n FROM preset_usage u WHERE u.preset_id = p.id) AS u
        WHERE p.usage_count <> u.n
        """
    )


# --- adopt --check ------------------------------------------------------------------------------------


def test_check_lists_each_mismatch_of_the_exact_shape_with_its_fix(exact_db):
    code, doc = preflight(exact_db)
    assert code == 1 and doc["ready"] is False
    assert set(by_subject(doc, "blocker")) == {"trigger preset_usage_count_up on preset_usage"}
    assert (
        "--drop-product-counter-triggers"
        in by_subject(doc, "blocker")["trigger preset_usage_count_up on preset_usage"]["fix"]
    )
    adds = by_subject(doc, "adds")
    assert set(adds) == {
        "extension btree_gist",
        "usage_tracking usage_tracking_customer_period",
        "usage_tracking usage_tracking_periods_disjoint",
        "usage_tracking usage_tracking_month",
        "usage_tracking usage_tracking_by_month",  # a month's periods summed (finance)
        "usage_tracking usage_tracking_period_end",
        "usage_events usage_events_idempotency_key_per_customer",
        "projects projects_active_by_cust",
        "preset_usage preset_usage_used_at",
        "usage_events usage_events_sum_cover",
        "customers customers_email_order",  # the admin's customer list order
        "customers customers_email_prefix",  # support's search by an email prefix
        "extension pg_trgm",  # support's search by part of a name
        "projects projects_name_trgm",
        "presets presets_name_trgm",
        "usage_events usage_events_idempotency_key",  # support's search by an idempotency key
    }
    assert adds["usage_tracking usage_tracking_customer_period"]["fix"] == (
        'ALTER TABLE "usage_tracking" ADD CONSTRAINT "usage_tracking_customer_period" '
        'UNIQUE ("customer_id", "period_start");'
    )
    # The product's django-pgtrigger trigger is named, and kept.
    assert "trigger pgtrigger_product_audit_5b1e0 on customers" in by_subject(doc, "note")


def test_check_table_output_and_ready_without_the_product_counter_trigger():
    db = build(product.EXACT_DDL, product.EXACT_DATA)
    try:
        result = db.manage("adopt", "--check")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1] == (
            f"ready: PostgreSQL {db.sql('SHOW server_version')[0][0]} as {OWNER}; 0 blocker(s), 16 thing(s) adopt adds"
        )
        assert "adds     extension btree_gist: not installed\n" in result.stdout
    finally:
        drop(db)


def test_check_refuses_the_supabase_shape_naming_each_gap(supabase_db):
    code, doc = preflight(supabase_db)
    assert code == 1
    assert set(by_subject(doc, "blocker")) == {
        "customers",
        "projects.customer_id",
        "presets.customer_id",
        "preset_usage.customer_id",
        "usage_tracking.customer_id",
        "usage_tracking.id",
        "trigger on_preset_used on preset_usage",
    }
    assert '"uuid_ids": ["usage_tracking"]' in by_subject(doc, "blocker")["usage_tracking.id"]["fix"]
    assert "table customers is missing" in by_subject(doc, "blocker")["customers"]["problem"]
    # What adopt could add itself is not a blocker: the period bounds beside the month, the events table.
    assert {"usage_tracking.period_start", "usage_tracking.period_end", "usage_events"} <= set(
        by_subject(doc, "adds")
    )
    # The fix names the mapping (tests/adoption/test_supabase.py adopts this shape with it).
    assert "BILLING_OPS_NAMES_FILE" in by_subject(doc, "blocker")["customers"]["fix"]
    assert by_subject(doc, "note")["function increment_ai_usage"]["problem"] == (
        "writes the counters of usage_tracking: once adopted, those writes are refused"
    )


def test_check_writes_nothing(exact_db):
    before, rows = catalog(exact_db), checksums(exact_db)
    preflight(exact_db)
    assert catalog(exact_db) == before
    assert checksums(exact_db) == rows


def test_check_of_rows_that_break_a_needed_constraint_is_a_blocker(exact_db):
    exact_db.sql(
        "INSERT INTO usage_tracking (customer_id, period_start, period_end, month) "
        "SELECT customer_id, period_start + interval '1 day', period_end, month FROM usage_tracking LIMIT 1"
    )
    code, doc = preflight(exact_db)
    blockers = by_subject(doc, "blocker")
    assert code == 1
    assert blockers["usage_tracking usage_tracking_periods_disjoint"]["problem"] == (
        "constraint missing, and 1 group(s) of rows break it"
    )


def test_check_as_a_role_that_owns_nothing_names_the_owner(exact_db):
    """Finding 7: the README's separate billing_ops@ role cannot add constraints or triggers."""
    code, doc = preflight(exact_db, role=APP_ROLE)
    blockers = by_subject(doc, "blocker")
    assert code == 1
    for table in ("customers", "projects", "presets", "preset_usage", "usage_events", "usage_tracking"):
        assert blockers[table]["problem"] == (
            f"owned by {OWNER}, not by {APP_ROLE}: adding constraints and triggers needs the owner"
        )
        assert f"GRANT {OWNER} TO {APP_ROLE}" in blockers[table]["fix"]
    assert (
        blockers["schema public"]["fix"]
        == f"GRANT CREATE ON SCHEMA public TO {APP_ROLE}; (as the schema's owner)"
    )
    before = catalog(exact_db)
    result = exact_db.manage("adopt", "--drop-product-counter-triggers", role=APP_ROLE)
    assert result.returncode == 1 and "nothing was changed" in result.stderr
    assert catalog(exact_db) == before


@pytest.mark.parametrize(
    "url, message",
    [
        ("sqlite:///tmp/x.db", "DATABASE_URL must be a PostgreSQL URL"),
        ("postgres://nobody@127.0.0.1:1/product", "database unreachable"),
    ],
)
def test_check_bad_input_exits_2_with_one_line(exact_db, url, message):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "DATABASE_URL": url}
    env.pop("EMBEDDED_DBNAME", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "adopt", "--check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_check_of_a_database_that_does_not_exist_exits_2(exact_db):
    from tests.adoption.conftest import ProductDB

    result = ProductDB("product_nowhere").manage("adopt", "--check")
    assert result.returncode == 2
    assert 'database "product_nowhere" does not exist' in result.stderr and "Traceback" not in result.stderr


def test_uninstall_of_a_database_never_adopted_exits_2(exact_db):
    before = catalog(exact_db)
    result = exact_db.manage("adopt", "--uninstall")
    assert result.returncode == 2
    assert "this database was not adopted" in result.stderr and "Traceback" not in result.stderr
    assert catalog(exact_db) == before


# --- adopt, end to end ---------------------------------------------------------------------------


def test_adopt_refused_while_the_product_counts_itself_changes_nothing(exact_db):
    before, rows = catalog(exact_db), checksums(exact_db)
    result = exact_db.manage("adopt")
    assert result.returncode == 1
    assert "BLOCKER  trigger preset_usage_count_up on preset_usage" in result.stdout
    assert catalog(exact_db) == before and checksums(exact_db) == rows


def test_exact_shape_adopts_reports_exactly_the_planted_drift_and_keeps_the_product_as_it_was(exact_db):
    before, rows = catalog(exact_db), checksums(exact_db)
    result = exact_db.manage("adopt", "--drop-product-counter-triggers")
    assert result.returncode == 0, result.stdout + result.stderr

    # Product rows byte-identical; every product key, index and trigger as it was (findings 2, 3),
    # except the counter trigger adopt was told to drop.
    assert checksums(exact_db) == rows
    after = catalog(exact_db)
    for kind in ("constraints", "indexes", "columns"):
        assert [r for r in before[kind] if r not in after[kind]] == [], kind
    assert [r for r in before["triggers"] if r not in after["triggers"]] == [
        r for r in before["triggers"] if r[1] == "preset_usage_count_up"
    ]
    fks = {
        r[1]: r[2] for r in after["constraints"] if r[2].startswith("FOREIGN KEY") and r[0] in PRODUCT_TABLES
    }
    assert fks and not [d for d in fks.values() if "CASCADE" in d]

    health = exact_db.manage("check_triggers")
    assert health.returncode == 0 and re.fullmatch(r"(\d+)/\1 healthy", health.stdout.splitlines()[-1])

    report = exact_db.manage("usage_discrepancies", "--format", "json")
    found = sorted(
        (r["check"], r["email"], r["tracked"], r["actual"])
        for r in json.loads(report.stdout)["discrepancies"]
    )
    assert found == sorted(product.PLANTED)

    assert exact_db.manage("reconcile_usage", "--apply").returncode == 0
    assert (
        json.loads(exact_db.manage("usage_discrepancies", "--format", "json").stdout)["discrepancies"] == []
    )
    assert recount_drift(exact_db) == []
    # Reconciliation changed counters only.
    others = [t for t in PRODUCT_TABLES if t not in ("usage_tracking", "presets")]
    assert {t: v for t, v in checksums(exact_db, others).items()} == {t: rows[t] for t in others}

    # The product's raw writes keep every counter right: no double count (finding 5).
    exact_db.sql(
        """
        INSERT INTO projects (customer_id, name) SELECT id, 'new' FROM customers WHERE email = 'user4@product.example';
        UPDATE projects SET status = 'archived' WHERE name = 'p1' AND customer_id IN (SELECT id FROM customers WHERE email LIKE 'user1_@%');
        INSERT INTO usage_events (customer_id, metric, quantity) SELECT id, 'ai_interaction', 2 FROM customers;
        INSERT INTO preset_usage (preset_id, customer_id) SELECT id, customer_id FROM presets;
        DELETE FROM preset_usage WHERE customer_id = (SELECT id FROM customers WHERE email = 'user2@product.example');
        INSERT INTO customers (email) VALUES ('late@product.example');
        INSERT INTO projects (customer_id, name) SELECT id, 'x' FROM customers WHERE email = 'late@product.example';
        """
    )
    assert recount_drift(exact_db) == []
    presets = exact_db.sql(
        "SELECT p.usage_count FROM presets p JOIN customers c ON c.id = p.customer_id WHERE c.email = 'user8@product.example'"
    )
    assert presets == [(3,)]  # 2 uses, and one more: 3, not 4

    # The product's pgtrigger_* trigger survives `pgtrigger install` too (finding 2).
    assert exact_db.manage("pgtrigger", "install").returncode == 0
    assert exact_db.sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'pgtrigger_product_audit_5b1e0'") == [
        (1,)
    ]
    assert exact_db.sql("SELECT count(*) FROM product_audit WHERE row_id IS NOT NULL") == [(41,)]


def test_product_foreign_keys_still_refuse_what_the_product_refuses(exact_db):
    """Finding 3: adopt never rewrites a product key to cascade: deleting a customer with rows is refused."""
    assert exact_db.manage("adopt", "--drop-product-counter-triggers").returncode == 0
    import psycopg

    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        exact_db.sql("DELETE FROM customers WHERE email = 'user3@product.example'")


def test_migrating_usage_backwards_never_drops_the_product_tables(exact_db):
    """Finding 8: `migrate usage zero` on an adopted database stops before dropping anything."""
    assert exact_db.manage("adopt", "--drop-product-counter-triggers").returncode == 0
    rows = checksums(exact_db)
    result = exact_db.manage("migrate", "usage", "zero")
    assert result.returncode != 0
    assert "manage.py adopt --uninstall" in result.stderr
    assert checksums(exact_db) == rows


def test_two_concurrent_first_writes_open_one_period_row(exact_db):
    """Finding 6: with the constraints adopt adds, two first writes at once make one period row."""
    assert exact_db.manage("adopt", "--drop-product-counter-triggers").returncode == 0
    (customer,) = exact_db.sql("INSERT INTO customers (email) VALUES ('first@product.example') RETURNING id")[
        0
    ]
    first = exact_db.connect()
    first.autocommit = False
    first.execute("INSERT INTO projects (customer_id, name) VALUES (%s, 'a')", [customer])
    pid = first.info.backend_pid
    errors = []

    def second():
        try:
            exact_db.sql("INSERT INTO projects (customer_id, name) VALUES (%s, 'b')", [customer])
        except Exception as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    deadline = time.monotonic() + 30
    while not exact_db.sql("SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid]):
        assert thread.is_alive() and time.monotonic() < deadline, "the second insert never waited"
        time.sleep(0.01)
    first.commit()
    first.close()
    thread.join(30)
    assert errors == []
    assert exact_db.sql(
        "SELECT active_projects_count FROM usage_tracking WHERE customer_id = %s", [customer]
    ) == [(2,)]


def test_uninstall_restores_the_catalog_and_the_product_s_own_write_paths(exact_db):
    before, rows = catalog(exact_db), checksums(exact_db)
    assert exact_db.manage("adopt", "--drop-product-counter-triggers").returncode == 0
    result = exact_db.manage("adopt", "--uninstall")
    assert result.returncode == 0, result.stderr
    assert catalog(exact_db) == before
    assert checksums(exact_db) == rows
    # The product's own counter trigger counts again; its counter code writes again.
    (count,) = exact_db.sql(
        "SELECT p.usage_count FROM presets p JOIN customers c ON c.id = p.customer_id WHERE c.email = 'user4@product.example'"
    )[0]
    exact_db.sql(
        "INSERT INTO preset_usage (preset_id, customer_id) SELECT p.id, p.customer_id FROM presets p "
        "JOIN customers c ON c.id = p.customer_id WHERE c.email = 'user4@product.example'"
    )
    exact_db.sql("UPDATE usage_tracking SET ai_interactions_count = ai_interactions_count + 1")
    assert exact_db.sql(
        "SELECT p.usage_count FROM presets p JOIN customers c ON c.id = p.customer_id WHERE c.email = 'user4@product.example'"
    ) == [(count + 1,)]


def test_the_product_s_own_role_keeps_writing_and_counting_after_adoption(exact_db):
    """Adopt as the owner; the product keeps connecting as its own role with its own grants."""
    exact_db.sql(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}; "
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}"
    )
    assert exact_db.manage("adopt", "--drop-product-counter-triggers").returncode == 0
    assert exact_db.manage("reconcile_usage", "--apply").returncode == 0
    exact_db.sql(
        """
        INSERT INTO customers (email) VALUES ('app@product.example');
        INSERT INTO projects (customer_id, name) SELECT id, 'a' FROM customers WHERE email LIKE 'app@%';
        INSERT INTO usage_events (customer_id, metric, quantity) SELECT id, 'minutes', 2.5 FROM customers;
        INSERT INTO preset_usage (preset_id, customer_id) SELECT id, customer_id FROM presets;
        UPDATE projects SET status = 'archived' WHERE name = 'p2';
        """,
        role=APP_ROLE,
    )
    assert recount_drift(exact_db) == []
    with pytest.raises(psycopg.errors.CheckViolation):
        exact_db.sql("UPDATE presets SET usage_count = usage_count + 1", role=APP_ROLE)


def test_check_with_the_drop_flag_lists_the_drop_and_is_ready(exact_db):
    code, doc = preflight_args(exact_db, "--drop-product-counter-triggers")
    assert code == 0
    assert by_subject(doc, "adds")["trigger preset_usage_count_up on preset_usage"]["fix"] == (
        'DROP TRIGGER "preset_usage_count_up" ON "preset_usage";'
    )


def test_adopt_twice_does_nothing_the_second_time(exact_db):
    assert exact_db.manage("adopt", "--drop-product-counter-triggers").returncode == 0
    before = catalog(exact_db)
    again = exact_db.manage("adopt", "--drop-product-counter-triggers")
    assert again.returncode == 0
    assert (
        again.stdout.strip()
        == "this database is already adopted: nothing to do (`manage.py migrate` upgrades billing-ops in it)"
    )
    assert catalog(exact_db) == before


def test_check_and_uninstall_together_is_bad_input(exact_db):
    result = exact_db.manage("adopt", "--check", "--uninstall")
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr and "Traceback" not in result.stderr
