"""Reads that several callers share: a customer by reference, the health of the counter triggers and
functions (SPEC §4, §6)."""

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pgtrigger
from django.db import connections
from pgtrigger.core import OUTDATED, UNINSTALLED

from usage.models import Customer
from usage.sql_functions import sql_functions

SQL_DIR = Path(__file__).resolve().parent / "sql"
UNKNOWN_CUSTOMER = "no customer with email or id {ref!r}"


def customer_resolve(ref: str) -> Customer:
    """A customer by id or by email (any case); ValueError with a clear message when there is none."""
    ref = (ref or "").strip()
    try:
        return Customer.objects.get(pk=uuid.UUID(ref))
    except (ValueError, Customer.DoesNotExist):
        pass
    customer = Customer.objects.filter(email__iexact=ref).first() if ref else None
    if customer is None:
        raise ValueError(UNKNOWN_CUSTOMER.format(ref=ref))
    return customer


@dataclass(frozen=True)
class TriggerStatus:
    kind: str  # "trigger" or "function"
    name: str
    table: str
    problem: str  # "" when healthy

    @property
    def ok(self) -> bool:
        return not self.problem


def expected_sql_functions(sql_folders: Iterable[Path] = (SQL_DIR,)) -> dict[str, str]:
    """Name -> body of every function defined in the SQL folders (their current definitions)."""
    return {function.name: function.body for folder in sql_folders for function in sql_functions(folder)}


def _expected_trigger_body(model, trigger) -> str:
    pgid = trigger.get_pgid(model)
    sql = str(trigger.compile(model).sql)
    match = re.search(rf"FUNCTION {pgid}\(\)\s*RETURNS TRIGGER AS \$\$(?P<body>.*?)\$\$", sql, re.S)
    return match["body"]


def trigger_health(using: str = "default", sql_folders: Iterable[Path] = (SQL_DIR,)) -> list[TriggerStatus]:
    """Every declared trigger, and every function of ``sql_folders``: present, enabled, current.

    usage checks its own functions by default; billing passes its folder too (billing/ops/checks.py).
    """
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

    for name, body in sorted(expected_sql_functions(sql_folders).items()):
        if name not in installed_functions:
            problem = "missing"
        elif installed_functions[name] != body:
            problem = "differs from the SQL in the code (run migrate: it installs the current definitions)"
        else:
            problem = ""
        statuses.append(TriggerStatus("function", name, "", problem))
    return statuses
