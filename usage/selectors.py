"""Reads that several callers share: the health of the counter triggers and functions (SPEC §4, §6)."""

import re
from dataclasses import dataclass
from pathlib import Path

import pgtrigger
from django.db import connections
from pgtrigger.core import OUTDATED, UNINSTALLED

from usage.sql_functions import sql_functions

SQL_DIR = Path(__file__).resolve().parent / "sql"
# Folders of reviewable SQL whose functions check_triggers compares with the database; other apps
# (billing) add theirs at start-up, so usage never imports them.
SQL_DIRS: list[Path] = [SQL_DIR]


@dataclass(frozen=True)
class TriggerStatus:
    kind: str  # "trigger" or "function"
    name: str
    table: str
    problem: str  # "" when healthy

    @property
    def ok(self) -> bool:
        return not self.problem


def expected_sql_functions() -> dict[str, str]:
    """Name -> body of every function defined in the SQL folders (their current definitions)."""
    return {function.name: function.body for folder in SQL_DIRS for function in sql_functions(folder)}


def _expected_trigger_body(model, trigger) -> str:
    pgid = trigger.get_pgid(model)
    sql = str(trigger.compile(model).sql)
    match = re.search(rf"FUNCTION {pgid}\(\)\s*RETURNS TRIGGER AS \$\$(?P<body>.*?)\$\$", sql, re.S)
    return match["body"]


def trigger_health(using: str = "default") -> list[TriggerStatus]:
    """Every expected trigger and function: present, enabled, and identical to the code's SQL."""
    statuses = []
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema()"
        )
        installed_functions = dict(cursor.fetchall())

    for model, trigger in pgtrigger.registered():
        table = model._meta.db_table
        status, enabled = trigger.get_installation_status(model, database=using)
        pgid = trigger.get_pgid(model)
        if status == UNINSTALLED:
            problem = "missing"
        elif status == OUTDATED:
            problem = "outdated: installed SQL differs from the model's declaration (run migrate)"
        elif not enabled:
            problem = "disabled (ALTER TABLE ... ENABLE TRIGGER, or pgtrigger enable)"
        elif installed_functions.get(pgid) != _expected_trigger_body(model, trigger):
            problem = "function body edited outside migrations (run pgtrigger install)"
        else:
            problem = ""
        statuses.append(TriggerStatus("trigger", trigger.name, table, problem))

    for name, body in sorted(expected_sql_functions().items()):
        if name not in installed_functions:
            problem = "missing"
        elif installed_functions[name] != body:
            problem = "differs from the SQL in the code (run migrate: it installs the current definitions)"
        else:
            problem = ""
        statuses.append(TriggerStatus("function", name, "", problem))
    return statuses
