"""Least privilege (SPEC §10): the app role runs the app's own operations and nothing more.

The roles come from `manage.py db_roles --apply`, as the README's production set-up makes them. The
app's operations run in-process after SET ROLE (consume, project creation, a signed webhook,
reconciliation, the report, cron's rollover) and as a real login of the app role (the commands, in
subprocesses); each way around the counters and the audit log is then tried as the app role.
"""

import hashlib
import hmac
import os
import time
from datetime import timedelta
from urllib.parse import quote

import psycopg
import pytest
from django.core.management import call_command
from django.db import ProgrammingError, connection, transaction
from django.test import Client
from django.utils import timezone

from billing.models import AuditLog, Subscription, WebhookEvent
from billing.ops.checks import drift_rows
from billing.ops.integrity import usage_reconcile
from billing.ops.usage_report import usage_report
from billing.services.consume import consume
from billing.services.credits import credit_grant
from billing.services.periods import period_roll_due
from billing.services.plans import subscription_change_plan
from billing.services.projects import project_create
from demo import webhook_payloads as wp
from demo.data import plans_ensure
from tests.conftest import raises_sqlstate, run_manage
from tests.factories import CustomerFactory, ProjectFactory
from tests.referee import assert_invariants
from usage.horizon import PERIOD_OUTSIDE_HORIZON, latest
from usage.models import Customer, Preset, UsageTracking
from usage.services.counters import counter_writes_allowed

OWNER, APP = "billing_test_owner", "billing_test_app"
SECRET = "whsec_roles_test"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def roles():
    call_command("db_roles", "--owner", OWNER, "--app", APP, "--apply")


def _as(role):
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {role}")


def _conninfo(user) -> dict:
    info = connection.connection.info
    return dict(host=info.host, port=info.port, dbname=info.dbname, user=user, autocommit=True)


def _sqlstate(sql, params=None, *, user=APP) -> str | None:
    """Run one statement (or a list of them, one transaction, each with ``params``) as a real login
    of ``user``; the SQLSTATE it failed with (None: it ran and committed)."""
    with psycopg.connect(**_conninfo(user)) as conn:
        try:
            with conn.transaction():
                for statement in [sql] if isinstance(sql, str) else sql:
                    conn.execute(statement, params)
        except psycopg.Error as exc:
            return exc.sqlstate
    return None


def _signed_stripe(client, payload):
    body = wp.body(payload)
    t = int(time.time())
    v1 = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return client.post(
        "/webhooks/stripe/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"t={t},v1={v1}",
    )


def test_the_app_role_runs_the_apps_own_operations(roles, settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    plans = plans_ensure()
    customer = CustomerFactory(email="roles@example.com")
    due = CustomerFactory(
        current_period_start=timezone.now() - timedelta(days=40),
        current_period_end=timezone.now() - timedelta(days=9),
    )
    drifted = CustomerFactory()
    ProjectFactory.create_batch(2, customer=drifted)
    with transaction.atomic(), counter_writes_allowed():  # history the triggers never saw (as the owner)
        UsageTracking.objects.filter(customer=drifted).update(active_projects_count=7)

    _as(APP)
    try:
        answer = consume(customer_id=customer.pk, metric="minutes", amount=5, idempotency_key="r1")
        assert answer.allowed and answer.new_usage == 5
        project_create(customer=customer, name="Podcast")
        start = timezone.now().replace(microsecond=0) - timedelta(days=1)
        response = _signed_stripe(
            Client(),
            wp.stripe_event(
                "customer.subscription.created",
                wp.stripe_subscription(
                    sub_id="sub_roles",
                    customer_id=customer.pk,
                    price_id=plans["starter"].stripe_price_id,
                    status="active",
                    start=start,
                    end=start + timedelta(days=30),
                ),
                created=start,
            ),
        )
        assert response.status_code == 200, response.content
        assert WebhookEvent.objects.get().status == "processed"
        assert Subscription.objects.get(customer=customer).plan_id == plans["starter"].pk
        result = usage_reconcile(customer_ids=None, apply=True, started_by="test (app role)")
        assert result.run.fixed == 1 and result.summary["remaining_drift"] == 0
        assert period_roll_due(actor="test (app role)") == 1
        month = customer.current_period_start.strftime("%Y-%m")
        assert any(r["email"] == "roles@example.com" for r in usage_report(month))
        credit_grant(
            customer=customer, metric="minutes", quantity=5, source="goodwill", actor="t", reason="r"
        )
        subscription_change_plan(customer=customer, target=plans["pro"], actor="t", override_reason="test")
        small = CustomerFactory()
        subscription_change_plan(customer=small, target=plans["starter"], actor="t")
        ProjectFactory.create_batch(plans["starter"].max_active_projects, customer=small)
        project_create(
            customer=small, name="One more", actor="t", override_reason="launch", is_superuser=True
        )
        # Every audited action appended through billing_audit_append() as the app role.
        assert set(AuditLog.objects.values_list("action", flat=True)) == {
            "recount",
            "webhook_effect",
            "period_rollover",
            "credit_grant",
            "plan_change",
            "project_limit_override",
        }
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
    due.refresh_from_db()
    assert due.current_period_end > timezone.now()
    assert AuditLog.objects.filter(action="period_rollover", customer_id=due.pk).exists()
    assert_invariants()

    # The commands, as a real login of the app role.
    info = _conninfo(APP)
    env = dict(os.environ)
    env.pop("EMBEDDED_DBNAME", None)
    env["DATABASE_URL"] = f"postgres://{APP}@/{info['dbname']}?host={quote(info['host'])}&port={info['port']}"
    for args in (
        ["usage_discrepancies", "--fail-on-drift", "--format", "json"],
        ["reconcile_usage", "--apply"],
        ["usage_report", "--month", month, "--format", "csv"],
        ["roll_usage_periods"],
        ["check_triggers"],
    ):
        result = run_manage(*args, env=env)
        assert result.returncode == 0, (args, result.stderr[-2000:])


@pytest.mark.parametrize(
    "sql, sqlstate",
    [
        ("TRUNCATE usage_tracking", "42501"),
        ("TRUNCATE audit_log", "42501"),
        ("ALTER TABLE usage_tracking DISABLE TRIGGER ALL", "42501"),
        ("ALTER TABLE projects DISABLE TRIGGER USER", "42501"),
        ("SET session_replication_role = replica", "42501"),
        ("UPDATE usage_tracking SET active_projects_count = 99", "23514"),
        (
            "SELECT set_config('billing_ops.recount', 'on', true); "
            "UPDATE usage_tracking SET active_projects_count = 99",
            "23514",
        ),
        # A period row goes only with its customer (checked at the commit, so a cascade passes).
        ("DELETE FROM usage_tracking", "23514"),
        ("SET CONSTRAINTS ALL IMMEDIATE; DELETE FROM usage_tracking", "23514"),
        ("DELETE FROM usage_tracking; SET CONSTRAINTS ALL DEFERRED", "23514"),
        ("UPDATE presets SET usage_count = 99", "23514"),
        ("UPDATE credit_grants SET remaining = 99", "23514"),
        # The plan stamped on each period as it opens (issue 12): the finance reports' attribution.
        ("UPDATE usage_tracking SET plan_id = NULL", "23514"),
        ("UPDATE usage_tracking SET plan_id = (SELECT max(id) FROM plans WHERE code = 'pro')", "23514"),
        ("INSERT INTO usage_counter_write_grants VALUES (pg_current_xact_id()::text::bigint)", "42501"),
        ("UPDATE audit_log SET reason = 'rewritten'", "42501"),
        # Appending goes through billing_audit_append(), which stamps the time itself.
        (
            "INSERT INTO audit_log (at, actor, action, target_type, target_id, reason)"
            " VALUES ('2020-01-01', 'forged', 'recount', 'customer', 'x', 'back-dated')",
            "42501",
        ),
        ("SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))", "42501"),
        ("DELETE FROM audit_log", "42501"),
        ("CREATE TABLE usage_tracking_copy (n int)", "42501"),
        (f"SET ROLE {OWNER}", "42501"),
        ("DROP TRIGGER pgtrigger_audit_log_append_only_2a0c0 ON audit_log", "42501"),
    ],
)
def test_the_app_role_cannot_get_around_the_counters_or_the_audit_log(roles, sql, sqlstate):
    plans_ensure()
    customer = CustomerFactory()
    ProjectFactory(customer=customer)
    consume(customer_id=customer.pk, metric="minutes", amount=1)  # an audit row and a usage row exist
    credit_grant(customer=customer, metric="minutes", quantity=5, source="goodwill", actor="t", reason="r")
    Preset.objects.create(customer=customer, name="Show notes")
    before = _snapshot()
    assert _sqlstate(sql) == sqlstate
    assert _snapshot() == before


def _snapshot():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT string_agg(active_projects_count || '/' || minutes_used || '/' || coalesce(plan_id::text, '-'), ','"
            " ORDER BY id) FROM usage_tracking),"
            " (SELECT count(*) FROM audit_log), (SELECT string_agg(reason, ',') FROM audit_log),"
            " (SELECT string_agg(remaining::text, ',') FROM credit_grants),"
            " (SELECT string_agg(usage_count::text, ',') FROM presets),"
            " (SELECT count(*) FROM pg_trigger WHERE tgenabled = 'D')"
        )
        return cursor.fetchone()


def test_audit_log_refuses_truncate_for_every_role():
    """TRUNCATE audit_log emptied the audit log (the guard covered UPDATE and DELETE only)."""
    AuditLog.objects.create(actor="t", action="recount", target_type="customer", target_id="x")
    # As the suite's superuser, the schema's owner.
    refused = raises_sqlstate(ProgrammingError, "42501", match="audit_log is append-only: TRUNCATE refused")
    with refused, connection.cursor() as cursor:
        cursor.execute("TRUNCATE audit_log")
    assert AuditLog.objects.count() == 1


def test_db_roles_prints_the_sql_and_refuses_bad_names():
    printed = run_manage("db_roles", "--owner", "acme_owner", "--app", "acme_app")
    assert printed.returncode == 0, printed.stderr
    assert "CREATE ROLE acme_app LOGIN NOSUPERUSER" in printed.stdout
    assert "REVOKE ALL ON public.usage_counter_write_grants FROM acme_app;" in printed.stdout
    for args in (
        ["--app", "Robert'); DROP TABLE audit_log;--"],
        ["--owner", "same", "--app", "same"],
        # Printed (and applied) grants of writes on the system catalogs to the app role before.
        ["--schema", "pg_catalog"],
        ["--schema", "information_schema"],
        ["--schema", "pg_toast"],
    ):
        refused = run_manage("db_roles", *args)
        assert refused.returncode == 2 and refused.stdout == "", refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


_EVIL_FUNCTION = (
    "CREATE FUNCTION pg_temp.evil() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "UPDATE public.usage_tracking SET active_projects_count = 99; "
    "UPDATE public.credit_grants SET remaining = 99; RETURN NULL; END $$; "
)


@pytest.mark.parametrize(
    "sql",
    [
        # A trigger on a temporary table of its own ran at trigger depth 1, past the counter guards.
        "CREATE TEMP TABLE t (n int); " + _EVIL_FUNCTION + "CREATE TRIGGER evil AFTER INSERT ON t "
        "FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.evil(); INSERT INTO t VALUES (1)",
        # The same through a temporary view's INSTEAD OF trigger.
        "CREATE TEMP VIEW v AS SELECT 1 AS n; "
        + _EVIL_FUNCTION.replace("RETURN NULL", "RETURN NEW")
        + "CREATE TRIGGER evil INSTEAD OF INSERT ON v FOR EACH ROW EXECUTE FUNCTION pg_temp.evil(); "
        "INSERT INTO v VALUES (1)",
        # A trigger of its own on a table it can write.
        _EVIL_FUNCTION + "CREATE TRIGGER evil AFTER INSERT ON projects FOR EACH STATEMENT "
        "EXECUTE FUNCTION pg_temp.evil()",
        "CREATE FUNCTION public.evil() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
        # Rules: on a table it can write, and on a temporary view of its own.
        "CREATE RULE evil AS ON INSERT TO projects DO ALSO UPDATE usage_tracking SET active_projects_count = 99",
        "CREATE TEMP VIEW v AS SELECT 1 AS n; CREATE RULE evil AS ON INSERT TO v DO INSTEAD "
        "UPDATE usage_tracking SET active_projects_count = 99; INSERT INTO v VALUES (1)",
        "CREATE VIEW public.evil AS SELECT 1 AS n",
        "CREATE EVENT TRIGGER evil ON ddl_command_start EXECUTE FUNCTION pg_temp.evil()",
    ],
    ids=[
        "temp-table-trigger",
        "temp-view-instead-of",
        "trigger-on-projects",
        "function-in-public",
        "rule-on-projects",
        "rule-on-temp-view",
        "view-in-public",
        "event-trigger",
    ],
)
def test_the_app_role_can_run_no_trigger_rule_or_view_of_its_own(roles, sql):
    """Nothing the app role creates can run writes nested in a trigger (depth > 0), where the counter
    guards let the counter triggers' own writes through: it can create no object at all."""
    plans_ensure()
    customer = CustomerFactory()
    ProjectFactory(customer=customer)
    credit_grant(customer=customer, metric="minutes", quantity=5, source="goodwill", actor="t", reason="r")
    before = _snapshot()
    assert _sqlstate(sql) == "42501"
    assert _snapshot() == before
    with psycopg.connect(**_conninfo(APP)) as conn:
        assert conn.execute(
            "SELECT has_database_privilege(current_database(), 'TEMPORARY'),"
            " (SELECT count(*) FROM pg_namespace n WHERE has_schema_privilege(n.oid, 'CREATE'))"
        ).fetchone() == (False, 0)


def test_the_scan_leaves_no_rows_behind_and_sees_only_its_own(roles):
    """The discrepancy scan's rows are its transaction's: a later scan clears finished ones."""
    plans_ensure()
    drifted = CustomerFactory()
    ProjectFactory.create_batch(2, customer=drifted)
    with transaction.atomic(), counter_writes_allowed():
        UsageTracking.objects.filter(customer=drifted).update(active_projects_count=7)
    _as(APP)
    try:
        for _ in range(3):
            assert len(drift_rows()) == 1
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM usage_drift_rows")
        assert cursor.fetchone()[0] == 0  # each scan deletes its rows before it commits
        cursor.execute("SELECT count(*) FROM usage_drift")  # another transaction's rows: none seen
        assert cursor.fetchone()[0] == 0


def _periods(customer) -> list:
    return list(UsageTracking.objects.filter(customer=customer).values_list("period_start", "period_end"))


@pytest.mark.parametrize(
    "start, end",
    [
        ("end", "9999-01-01T00:00:00Z"),  # reproduced as billing_app: a period ending in 9999, opened
        ("end", "horizon+1s"),
        ("1970-01-01T00:00:00Z", "1970-02-01T00:00:00Z"),
        ("1999-12-31T23:59:59Z", "2000-01-15T00:00:00Z"),
        ("end+1d", "end"),  # reversed
        ("end", "end"),  # empty
        (None, "end"),
        ("end", None),
    ],
)
def test_the_app_role_opens_no_period_outside_the_horizon(roles, start, end):
    """usage_tracking_open is SECURITY DEFINER and the app role may call it: it took any bounds."""
    plans_ensure()
    customer = CustomerFactory()
    ProjectFactory(customer=customer)
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        now = cursor.fetchone()[0]
    after = customer.current_period_end  # no period of the customer's overlaps what is opened here
    at = {"end": after, "end+1d": after + timedelta(days=1), "horizon+1s": latest(now) + timedelta(seconds=1)}
    start, end = (at.get(v, v) for v in (start, end))
    before, audit = _periods(customer), AuditLog.objects.count()
    with (
        psycopg.connect(**_conninfo(APP)) as conn,
        pytest.raises(psycopg.Error) as refused,
        conn.transaction(),
    ):
        conn.execute("SELECT usage_tracking_open(%s, %s, %s)", [customer.pk, start, end])
    assert refused.value.sqlstate == PERIOD_OUTSIDE_HORIZON
    assert "is outside the accepted range: it must start on or after 2000-01-01" in str(refused.value)
    assert (_periods(customer), AuditLog.objects.count()) == (before, audit)

    # A period within the horizon still opens (the rule refuses bounds, not the app role).
    assert (
        _sqlstate("SELECT usage_tracking_open(%s, %s, %s)", [customer.pk, after, after + timedelta(days=31)])
        is None
    )
    assert (after, after + timedelta(days=31)) in _periods(customer)
    assert_invariants()


def test_the_app_role_deletes_a_customer_with_its_periods_and_no_period_alone(roles):
    """The guard on DELETE FROM usage_tracking lets a customer's deletion through, every way it comes:
    Django's cascade (Customer.delete() deletes the periods first), the product's raw DELETE FROM
    customers (the database's cascade), a product deleting the rows first (an adopted product's order)."""
    plans_ensure()
    by_orm, by_sql, rows_first, kept = CustomerFactory.create_batch(4)
    for customer in (by_orm, by_sql, rows_first, kept):
        ProjectFactory(customer=customer)
        consume(customer_id=customer.pk, metric="minutes", amount=2)
    _as(APP)
    try:
        Customer.objects.get(pk=by_orm.pk).delete()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
    assert _sqlstate("DELETE FROM customers WHERE id = %s", [by_sql.pk]) is None
    rows_then_customer = [
        "DELETE FROM usage_tracking WHERE customer_id = %(id)s",
        "DELETE FROM customers WHERE id = %(id)s",
    ]
    assert _sqlstate(rows_then_customer, {"id": rows_first.pk}) is None
    # Its periods, then the customer, then the customer put back as it was: refused at the commit.
    put_back = (
        "INSERT INTO customers (id, email, name, current_period_start, current_period_end, created_at) "
        "VALUES (%(id)s, %(email)s, %(name)s, %(current_period_start)s, %(current_period_end)s, %(created_at)s)"
    )
    row = Customer.objects.filter(pk=kept.pk).values().get()
    assert _sqlstate([*rows_then_customer, put_back], row) == "23514"
    assert _sqlstate("DELETE FROM usage_tracking WHERE customer_id = %s", [kept.pk]) == "23514"
    assert set(UsageTracking.objects.values_list("customer_id", flat=True)) == {kept.pk}
    assert not Customer.objects.filter(pk__in=[by_orm.pk, by_sql.pk, rows_first.pk]).exists()
    assert_invariants()


@pytest.mark.parametrize("occurred_at", ["9999-06-01T00:00:00Z", "1970-01-01T00:00:00Z"])
def test_the_product_opens_no_period_outside_the_horizon_with_an_event(roles, occurred_at):
    """A usage event the product dated 9999 opened a period ending in 10000 through the counter trigger."""
    plans_ensure()
    customer = CustomerFactory()
    before = _periods(customer)
    insert = (
        "INSERT INTO usage_events (id, customer_id, metric, quantity, occurred_at, created_at) "
        "VALUES (gen_random_uuid(), %s, 'minutes', 1, %s, now())"
    )
    assert _sqlstate(insert, [customer.pk, occurred_at]) == PERIOD_OUTSIDE_HORIZON
    assert _periods(customer) == before and not customer.usage_events.exists()
    # Within the horizon, a late event of last year opens its period as before.
    assert _sqlstate(insert, [customer.pk, customer.current_period_start - timedelta(days=365)]) is None
    assert len(_periods(customer)) == len(before) + 1
    assert_invariants()
