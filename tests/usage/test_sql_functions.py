"""SQL functions defined once and installed by every migrate (SPEC §13, usage/sql_functions.py)."""

import pytest
from django.db import connection

from billing.selectors import SQL_DIR as BILLING_SQL
from tests.conftest import run_manage
from usage.selectors import SQL_DIR as USAGE_SQL
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
