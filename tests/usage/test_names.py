"""One mapping of the product's table and column names (usage/names.py; issue 13 deliver 2).

The identity (a greenfield install) changes nothing: every SQL text is the file's, every table and
column billing-ops' own name. A mapping renames the product's tables and columns in the models and in
every SQL function and trigger body, and leaves billing-ops' own tables' columns alone.
"""

import json
import subprocess
import sys

import pgtrigger
import pytest
from django.core.exceptions import ImproperlyConfigured

from billing import selectors as billing_selectors
from billing.selectors import SQL_DIR as BILLING_SQL
from tests.conftest import ROOT
from usage import models as usage_models
from usage import selectors as usage_selectors
from usage.metrics import metrics_sql_function
from usage.names import PRODUCT_COLUMNS, mapping, mapping_load, mapping_parse, render
from usage.selectors import SQL_DIR as USAGE_SQL
from usage.selectors import trigger_health
from usage.sql_functions import sql_functions, sql_functions_install

SUPABASE_NAMES = ROOT / "docs" / "adoption" / "supabase-names.json"
SUPABASE = mapping_parse(json.loads(SUPABASE_NAMES.read_text()))
PRODUCT_MODELS = (
    usage_models.Customer,
    usage_models.Project,
    usage_models.Preset,
    usage_models.PresetUsage,
    usage_models.UsageEvent,
    usage_models.UsageTracking,
)


def test_the_configured_mapping_of_the_tests_is_the_identity():
    assert mapping().identity


def test_the_identity_renders_every_sql_file_exactly_as_written():
    for folder in (USAGE_SQL, BILLING_SQL):
        for function in sql_functions(folder):
            assert function.text == (folder / f"{function.name}.sql").read_text()
    assert "'minutes_used'" in metrics_sql_function().text


def test_the_identity_leaves_the_product_tables_and_columns_as_billing_ops_names_them():
    for model in PRODUCT_MODELS:
        table = model._meta.db_table
        columns = {f.column for f in model._meta.concrete_fields}
        assert columns == set(PRODUCT_COLUMNS[table])
        assert all(getattr(f, "db_column", None) is None for f in model._meta.concrete_fields)


@pytest.mark.django_db
def test_the_identity_renders_what_the_migrations_installed():
    """Every trigger and function the migrations installed (their own frozen SQL, the pgtrigger
    migrations) is what the rendered declarations compile to: nothing to reinstall, nothing outdated."""
    definitions = [*usage_selectors.sql_definitions(), *billing_selectors.sql_definitions()]
    unhealthy = [s for s in trigger_health(definitions=definitions) if not s.ok]
    assert unhealthy == []
    assert sql_functions_install(definitions) == []


def test_a_mapping_renames_the_product_names_in_a_counter_function():
    text = (USAGE_SQL / "usage_tracking_add.sql").read_text()
    rendered = render(text, SUPABASE)
    assert "customer_id" not in rendered.split("$$")[1]
    assert "FROM users c WHERE c.id = d.user_id" in rendered
    assert "SET projects_count = t.projects_count + coalesce(p_active[1], 0)" in rendered
    assert (
        "user_id, period_start, period_end, month,\n            projects_count, ai_interactions, transcription_minutes, updated_at)"
        in rendered
    )
    assert "-- Apply counter deltas to usage_tracking rows" in rendered  # comments as written
    assert "'ai_interaction'" in rendered and "'YYYY-MM'" in rendered  # strings as written


def test_a_mapping_keeps_billing_ops_own_columns_where_the_text_also_names_one_of_its_tables():
    consume = render((BILLING_SQL / "billing_consume.sql").read_text(), SUPABASE)
    # usage_events is a product table: its INSERT's columns and conflict target are renamed ...
    assert "INSERT INTO usage_events AS e (id, user_id, metric" in consume
    assert "ON CONFLICT (user_id, idempotency_key) DO NOTHING" in consume
    assert "NOT EXISTS (SELECT 1 FROM users c WHERE c.id = v_customer)" in consume
    # ... billing-ops' own tables and the function's parameter keep customer_id.
    assert "FROM credit_grants cg WHERE cg.customer_id = v_customer" in consume
    assert "INSERT INTO credit_draws (grant_id, customer_id," in consume
    assert "billing_consume(customer_id uuid" in consume
    assert "billing_consume.customer_id" in consume
    roll = render((BILLING_SQL / "billing_period_roll.sql").read_text(), SUPABASE)
    assert "UPDATE users SET current_period_start = new_start" in roll
    assert "'customer_id', p_customer" in roll  # the audit row's key, appended by billing_audit_append
    audit = render((BILLING_SQL / "billing_audit_append.sql").read_text(), SUPABASE)
    assert "INSERT INTO audit_log (at, actor, action, target_type, target_id, customer_id," in audit
    assert "WHERE t.user_id = p_customer" in roll


def test_a_mapping_renames_the_counter_named_in_the_metric_catalogue():
    rendered = render(metrics_sql_function().text, SUPABASE)
    assert "'transcription_minutes'" in rendered and "'minutes_used'" not in rendered
    assert "'ai_interactions'" in rendered and "'projects_count'" in rendered


def test_a_mapping_renames_the_guards_and_counter_triggers_of_the_models():
    for model, trigger in pgtrigger.registered():
        if model not in PRODUCT_MODELS:
            continue
        rendered = render(trigger.func, SUPABASE, other_columns={})
        assert "customer_id" not in rendered, trigger.name
        for counter in ("active_projects_count", "ai_interactions_count", "minutes_used"):
            assert counter not in rendered, trigger.name


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "must be an object"),
        ({"table": {}}, "unknown key(s) table"),
        ({"tables": {"custmers": "users"}}, "unknown table 'custmers'"),
        ({"tables": {"customers": "Users; DROP"}}, "is not a lower-case SQL name"),
        ({"columns": {"customer_id": "user_id"}}, "unknown column 'customer_id'"),
        ({"columns": {"customers.id": "uid"}}, "primary keys keep the name id"),
        ({"columns": {"projects.customer_id": "user_id"}}, "renamed the same way on every product table"),
        ({"columns": {"projects.name": "status"}}, "two columns named 'status'"),
        ({"tables": {"projects": "customers"}}, "two product tables would be named 'customers'"),
        ({"uuid_ids": ["customers"]}, "'uuid_ids' lists the tables whose id is a uuid"),
    ],
)
def test_a_wrong_mapping_is_refused_with_what_is_wrong(data, message):
    with pytest.raises(ImproperlyConfigured) as refused:
        mapping_parse(data)
    assert message in str(refused.value)


def test_a_mapping_file_that_cannot_be_read_or_parsed_is_refused(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="cannot read it"):
        mapping_load({}, str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{tables:")
    with pytest.raises(ImproperlyConfigured, match="not JSON"):
        mapping_load({}, str(tmp_path / "bad.json"))
    with pytest.raises(ImproperlyConfigured, match="not both"):
        mapping_load({"tables": {"customers": "users"}}, str(SUPABASE_NAMES))


def _manage(*args, names_file):
    env = {"DEBUG": "on", "BILLING_OPS_NAMES_FILE": str(names_file), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_manage_py_refuses_a_wrong_mapping_file_in_one_line(tmp_path):
    bad = tmp_path / "names.json"
    bad.write_text('{"tables": {"users": "customers"}}')
    result = _manage("check", names_file=bad)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"billing-ops: BILLING_OPS_NAMES_FILE {bad}: unknown table 'users' (billing-ops' product tables: "
        "customers, projects, presets, preset_usage, usage_events, usage_tracking)"
    ]


def test_the_models_take_their_table_and_column_names_from_the_mapping_file():
    script = (
        "from usage.models import Customer, UsageTracking, UsageEvent; import pgtrigger;"
        "print(Customer._meta.db_table);"
        "print(sorted(f.column for f in UsageTracking._meta.concrete_fields));"
        "print(UsageEvent._meta.get_field('customer').column, UsageTracking._meta.pk.get_internal_type());"
        "print(any('customer_id' in t.func for m, t in pgtrigger.registered() if m._meta.app_label == 'usage'))"
    )
    result = _manage("shell", "-c", script, names_file=SUPABASE_NAMES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-4:] == [
        "users",
        "['ai_interactions', 'id', 'month', 'period_end', 'period_start', 'projects_count', "
        "'transcription_minutes', 'updated_at', 'user_id']",
        "user_id UUIDField",
        "False",
    ]


def test_the_identity_puts_nothing_in_the_migrations_state():
    from importlib import import_module

    migration = import_module("usage.migrations.0018_product_names").Migration
    (operation,) = migration.operations
    assert operation.state_operations == [] and operation.database_operations == []


def test_query_parameters_keep_their_names():
    sql = "SELECT count(*) FROM usage_tracking WHERE month = %(month)s AND customer_id = %s"
    assert (
        render(sql, SUPABASE)
        == "SELECT count(*) FROM usage_tracking WHERE month = %(month)s AND user_id = %s"
    )
    renamed = mapping_parse({"columns": {"usage_tracking.month": "period_key"}})
    assert (
        render(sql, renamed)
        == "SELECT count(*) FROM usage_tracking WHERE period_key = %(month)s AND customer_id = %s"
    )


def test_a_column_alias_named_like_a_product_table_is_kept():
    sql = "SELECT a.projects FROM (SELECT count(*) AS projects FROM projects p) active"
    renamed = mapping_parse({"tables": {"projects": "workspaces"}})
    assert (
        render(sql, renamed)
        == "SELECT a.projects FROM (SELECT count(*) AS projects FROM workspaces p) active"
    )


def test_the_report_keeps_its_own_table_s_customer_id_and_renames_the_product_s():
    from usage.services.drift import DRIFT_COLUMNS

    sql = (
        "INSERT INTO reconciliation_run_rows (run_id, customer_id, email) "
        "SELECT 1, d.customer_id, c.email FROM pg_temp.usage_drift d LEFT JOIN customers c ON c.id = d.customer_id"
    )
    assert render(sql, SUPABASE, extra_tables=DRIFT_COLUMNS) == sql.replace(
        "JOIN customers c", "JOIN users c"
    )
    count = "SELECT count(DISTINCT customer_id) FROM pg_temp.usage_drift"
    assert render(count, SUPABASE, extra_tables=DRIFT_COLUMNS) == count
    check = "INSERT INTO pg_temp.usage_drift (check_name, customer_id) SELECT 'x', customer_id FROM projects"
    assert render(check, SUPABASE, extra_tables=DRIFT_COLUMNS) == (
        "INSERT INTO pg_temp.usage_drift (check_name, customer_id) SELECT 'x', user_id FROM projects"
    )
