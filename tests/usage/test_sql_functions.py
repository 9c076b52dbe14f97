"""SQL functions defined once and installed by every migrate (SPEC §13, usage/sql_functions.py)."""

import pytest
from django.db import connection

from billing.ops.checks import trigger_health
from billing.selectors import SQL_DIR as BILLING_SQL
from billing.selectors import sql_definitions as billing_sql_definitions
from tests.conftest import run_manage
from usage.selectors import SQL_DIR as USAGE_SQL
from usage.selectors import sql_definitions as usage_sql_definitions
from usage.sql_functions import sql_functions, sql_functions_install


def installed_body(name):
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = %s", [name])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_a_migrated_database_holds_every_current_definition_and_a_new_install_changes_nothing():
    for folder in (USAGE_SQL, BILLING_SQL):
        for function in sql_functions(folder):
            assert installed_body(function.name) == function.body
        assert sql_functions_install(sql_functions(folder)) == []


@pytest.mark.django_db
def test_a_definition_that_differs_from_the_database_is_installed_again():
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION billing_credit_grants_add(p_grant uuid[], p_drawn numeric[]) "
            "RETURNS void LANGUAGE plpgsql AS $$ BEGIN END; $$"
        )
    assert sql_functions_install(sql_functions(BILLING_SQL)) == ["billing_credit_grants_add"]
    (current,) = [f for f in sql_functions(BILLING_SQL) if f.name == "billing_credit_grants_add"]
    assert installed_body("billing_credit_grants_add") == current.body
    assert sql_functions_install(sql_functions(BILLING_SQL)) == []


@pytest.mark.django_db
def test_a_comment_only_change_to_the_file_is_installed_too(tmp_path):
    (original,) = [f for f in sql_functions(USAGE_SQL) if f.name == "usage_presets_add"]
    (tmp_path / "usage_presets_add.sql").write_text("-- reworded\n" + original.text)
    assert sql_functions_install(sql_functions(tmp_path)) == ["usage_presets_add"]
    assert sql_functions_install(sql_functions(tmp_path)) == []
    assert sql_functions_install(sql_functions(USAGE_SQL)) == ["usage_presets_add"]


@pytest.mark.parametrize(
    "file_name, text",
    [
        ("usage_other.sql", "CREATE OR REPLACE FUNCTION usage_thing() RETURNS void LANGUAGE sql AS $$ $$;"),
        ("usage_thing.sql", "SELECT 1;"),
        (
            "usage_thing.sql",
            "CREATE OR REPLACE FUNCTION usage_thing() RETURNS void LANGUAGE sql AS $$ $$;\n"
            "CREATE OR REPLACE FUNCTION usage_thing2() RETURNS void LANGUAGE sql AS $$ $$;",
        ),
    ],
    ids=["named-otherwise", "no-function", "two-functions"],
)
def test_a_file_that_is_not_one_function_named_after_it_is_refused(tmp_path, file_name, text):
    (tmp_path / file_name).write_text(text)
    with pytest.raises(ValueError, match="must define exactly one function, named"):
        sql_functions(tmp_path)


@pytest.mark.django_db(transaction=True)
def test_migrate_on_an_up_to_date_database_reinstalls_nothing():
    result = run_manage("migrate", "--verbosity", "1")
    assert result.returncode == 0, result.stderr
    assert "installed the current definition" not in result.stdout + result.stderr


def _security_definers(schema):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.proname, p.proconfig FROM pg_proc p WHERE p.prosecdef AND p.pronamespace = %s::regnamespace",
            [schema],
        )
        return dict(cursor.fetchall())


@pytest.mark.django_db
def test_security_definer_functions_are_pinned_to_the_schema_they_are_installed_in():
    """They pinned search_path = public, pg_temp: installed in another schema (an adopted database),
    they read public's tables, where a same-named table could open the counter guard."""
    definitions = [*usage_sql_definitions(), *billing_sql_definitions()]
    assert all(v == ["search_path=public, pg_temp"] for v in _security_definers("public").values())
    with connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA acme")
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in cursor.fetchall():  # the schema's tables, empty (the functions' row types)
            cursor.execute(f'CREATE TABLE acme."{table}" (LIKE public."{table}")')
        cursor.execute("SET LOCAL search_path = acme")
        installed = sql_functions_install(definitions)
        assert "usage_counter_writes_granted" in installed and "billing_audit_append" in installed
        pinned = _security_definers("acme")
        assert len(pinned) == 7, pinned
        assert all(config == ["search_path=acme, pg_temp"] for config in pinned.values()), pinned
        assert sql_functions_install(definitions) == []  # idempotent there too
        # public's grants table marks this transaction: acme's guard must not read it.
        cursor.execute(
            "INSERT INTO public.usage_counter_write_grants VALUES (pg_current_xact_id()::text::bigint)"
        )
        cursor.execute("SELECT acme.usage_counter_writes_granted(), public.usage_counter_writes_granted()")
        assert cursor.fetchone() == (False, True)
        cursor.execute("SET LOCAL search_path = public")


@pytest.mark.django_db
def test_a_security_definer_function_whose_search_path_was_changed_is_unhealthy_until_migrate():
    with connection.cursor() as cursor:
        cursor.execute("ALTER FUNCTION usage_counter_writes_granted() SET search_path = pg_temp, public")
    (status,) = [s for s in trigger_health() if s.name == "usage_counter_writes_granted"]
    assert status.problem.startswith("search_path is not pinned to this schema")
    assert sql_functions_install(usage_sql_definitions()) == ["usage_counter_writes_granted"]
    (status,) = [s for s in trigger_health() if s.name == "usage_counter_writes_granted"]
    assert status.ok
