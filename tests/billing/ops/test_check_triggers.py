"""manage.py check_triggers (SPEC §4, §8): real subprocesses, real exit codes."""

import json

import pytest
from django.db import connection

from billing.ops.checks import trigger_health
from tests.conftest import manage_env, run_manage
from usage.models import Project, UsageTracking

pytestmark = pytest.mark.django_db(transaction=True)


def sql(statement):
    with connection.cursor() as cursor:
        cursor.execute(statement)


def pgid(model, name):
    return next(t for t in model._meta.triggers if t.name == name).get_pgid(model)


def test_healthy_database_exits_0_and_lists_everything():
    result = run_manage("check_triggers", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["healthy"] is True
    names = {item["name"] for item in doc["items"]}
    assert {
        "projects_on_insert",
        "usage_events_on_update",
        "preset_usage_on_delete",
        "usage_tracking_add",
    } <= names
    assert all(item["ok"] for item in doc["items"])


@pytest.mark.parametrize(
    "break_it, restore, expected",
    [
        (
            lambda: sql(f"ALTER TABLE projects DISABLE TRIGGER {pgid(Project, 'projects_on_insert')}"),
            lambda: sql(f"ALTER TABLE projects ENABLE TRIGGER {pgid(Project, 'projects_on_insert')}"),
            "projects_on_insert on projects: disabled",
        ),
        (
            lambda: sql(
                f"DROP TRIGGER {pgid(UsageTracking, 'usage_tracking_protect_update')} ON usage_tracking"
            ),
            lambda: next(
                t for t in UsageTracking._meta.triggers if t.name == "usage_tracking_protect_update"
            ).install(UsageTracking),
            "usage_tracking_protect_update on usage_tracking: missing",
        ),
        (
            lambda: sql(
                "CREATE OR REPLACE FUNCTION usage_presets_add(p_preset uuid[], p_count integer[], "
                "p_last_used timestamptz[], p_recount boolean[]) RETURNS void LANGUAGE plpgsql AS $$ BEGIN END; $$"
            ),
            lambda: _reapply_function("usage_presets_add"),
            "function usage_presets_add: differs",
        ),
        (
            lambda: sql(
                f"CREATE OR REPLACE FUNCTION {pgid(Project, 'projects_on_delete')}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END; $$"
            ),
            lambda: next(t for t in Project._meta.triggers if t.name == "projects_on_delete").install(
                Project
            ),
            "projects_on_delete on projects: function body edited",
        ),
        (
            # What `migrate --fake-initial` leaves on a product's own usage_tracking (issue 13, finding 6).
            lambda: sql("ALTER TABLE usage_tracking DROP CONSTRAINT usage_tracking_customer_period"),
            lambda: sql(
                "ALTER TABLE usage_tracking ADD CONSTRAINT usage_tracking_customer_period "
                "UNIQUE (customer_id, period_start)"
            ),
            "FAIL  constraint usage_tracking_customer_period on usage_tracking: missing",
        ),
    ],
    ids=["disabled", "dropped", "function-edited", "trigger-function-edited", "constraint-missing"],
)
def test_each_kind_of_damage_exits_1_and_names_it(break_it, restore, expected):
    break_it()
    try:
        result = run_manage("check_triggers")
        assert result.returncode == 1
        assert expected in result.stdout
        assert "1 broken" in result.stdout
    finally:
        restore()
    assert all(s.ok for s in trigger_health())


def _reapply_function(name):
    from usage.selectors import SQL_DIR

    # Its current definition, as migrate installs it.
    sql((SQL_DIR / f"{name}.sql").read_text())


def test_bad_arguments_exit_2():
    result = run_manage("check_triggers", "--format", "xml")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_unreachable_database_exits_2_with_one_line():
    env = manage_env()
    env["DATABASE_URL"] = "postgres://nobody@127.0.0.1:1/nothing"
    result = run_manage("check_triggers", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("CommandError: database unreachable")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_database_alias_exits_2_without_a_traceback():
    result = run_manage("check_triggers", "--database", "replica-that-does-not-exist")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr and "Traceback" not in result.stderr
