"""Reads that several callers share: the health of the counter triggers and functions (SPEC §4, §6)."""

import re
from dataclasses import dataclass
from pathlib import Path

import pgtrigger
from django.db import connections
from pgtrigger.core import OUTDATED, UNINSTALLED

SQL_DIR = Path(__file__).resolve().parent / "sql"
# Folders of reviewable SQL whose functions check_triggers compares with the database; other apps
# (billing) add theirs at start-up, so usage never imports them.
SQL_DIRS: list[Path] = [SQL_DIR]

_FUNCTION_RE = re.compile(
    r"CREATE OR REPLACE FUNCTION\s+(?P<name>\w+)\s*\(.*?\bAS \$\$(?P<body>.*?)\$\$", re.S | re.I
)


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
    """Name -> body of every helper function in the SQL folders, the latest file's definition winning."""
    functions: dict[str, str] = {}
    for path in sorted(
        (p for folder in SQL_DIRS for p in folder.glob("*.sql")), key=lambda p: (p.name, str(p))
    ):
        for match in _FUNCTION_RE.finditer(path.read_text()):
            functions[match["name"]] = match["body"]
    return functions


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
            problem = "differs from the SQL in the code (run migrate, or re-apply the latest .sql file)"
        else:
            problem = ""
        statuses.append(TriggerStatus("function", name, "", problem))
    return statuses
