"""Reads that several callers share: a customer by reference, the health of the counter triggers and
functions (SPEC §4, §6)."""

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pgtrigger
from django.apps import apps
from django.contrib.postgres.constraints import ExclusionConstraint
from django.db import connections, models
from django.db.models import BooleanField, F, Func

from usage.horizon import period_check_sql_function
from usage.metrics import metrics_sql_function
from usage.models import Customer, UsageTracking
from usage.sql_functions import SqlFunction, sql_functions
from usage.text import echo, storable

SQL_DIR = Path(__file__).resolve().parent / "sql"
UNKNOWN_CUSTOMER = "no customer with email or id {ref}"


class PeriodCurrent(Func):
    """The SQL definition of "the current period" (usage/sql/usage_period_current.sql), for querysets."""

    function = "usage_period_current"
    output_field = BooleanField()

    def __init__(self, start="period_start", end="period_end"):
        super().__init__(F(start), F(end))


def current_period(customer: Customer) -> UsageTracking | None:
    """The customer's usage_tracking row of the current period, if it is open."""
    return UsageTracking.objects.filter(PeriodCurrent(), customer=customer).first()


def customer_resolve(ref: str) -> Customer:
    """A customer by id or by email (any case); ValueError with a clear message when there is none."""
    ref = (ref or "").strip()
    if not storable(ref):  # a NUL or undecodable bytes: no customer has it, and the driver would refuse it
        raise ValueError(UNKNOWN_CUSTOMER.format(ref=echo(ref)))
    try:
        return Customer.objects.get(pk=uuid.UUID(ref))
    except (ValueError, Customer.DoesNotExist):
        pass
    customer = Customer.objects.filter(email__iexact=ref).first() if ref else None
    if customer is None:
        raise ValueError(UNKNOWN_CUSTOMER.format(ref=echo(ref)))
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


def sql_definitions() -> list[SqlFunction]:
    """usage's SQL functions, current definitions: usage/sql/*.sql and the generated ones (the metric
    catalogue, the period horizon)."""
    return [*sql_functions(SQL_DIR), metrics_sql_function(), period_check_sql_function()]


def expected_sql_functions(definitions: Iterable[SqlFunction] | None = None) -> dict[str, str]:
    """Name -> body of every function defined (usage's by default)."""
    return {function.name: function.body for function in definitions or sql_definitions()}


def _expected_trigger_body(
    model: Any, trigger: pgtrigger.Trigger
) -> str:  # a model class (pgtrigger types it as an instance)
    pgid = trigger.get_pgid(model)
    sql = str(trigger.compile(model).sql)
    match = re.search(rf"FUNCTION {pgid}\(\)\s*RETURNS TRIGGER AS \$\$(?P<body>.*?)\$\$", sql, re.S)
    assert match, f"pgtrigger compiled no function for {pgid}"
    return match["body"]


def row_constraints(model: type[models.Model]) -> list[models.BaseConstraint]:
    """The unique and exclusion constraints of ``model`` that keep one counter or event row per key.

    ``migrate --fake-initial`` (and a product's own DDL) can leave them out without a word: then two
    concurrent first writes of a period insert two usage_tracking rows, and a retried consume two events.
    """
    return [
        c
        for c in model._meta.constraints
        if isinstance(c, ExclusionConstraint)
        or (isinstance(c, models.UniqueConstraint) and c.fields and not c.condition)
    ]


def _column(model: type[models.Model], name: Any) -> str:
    field = model._meta.get_field(str(name))
    assert isinstance(field, models.Field)
    return str(field.column)


def row_constraint_present(cursor: Any, model: type[models.Model], constraint: models.BaseConstraint) -> bool:
    """Whether the table has this constraint or an equivalent one under another name.

    Unique: a unique index on exactly these columns, without predicate or expressions. Exclusion:
    an exclusion constraint whose first element is the same column compared with ``=``.
    """
    table = model._meta.db_table
    if isinstance(constraint, ExclusionConstraint):
        column = _column(model, constraint.expressions[0][0])
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'x'",
            [table],
        )
        return any(re.search(rf'"?\b{column}\b"?\s+WITH\s+=', row[0]) for row in cursor.fetchall())
    assert isinstance(constraint, models.UniqueConstraint)
    columns = sorted(_column(model, name) for name in constraint.fields)
    cursor.execute(
        "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL "
        "GROUP BY i.indexrelid",
        [table],
    )
    return columns in [row[0] for row in cursor.fetchall()]


def trigger_health(
    using: str = "default", definitions: Iterable[SqlFunction] | None = None
) -> list[TriggerStatus]:
    """Every declared trigger, and every function of ``definitions``: present, enabled, current.

    usage checks its own functions by default; billing passes its folder too (billing/ops/checks.py).
    """
    definitions = list(definitions or sql_definitions())
    statuses = []
    # The installed functions and triggers in one query (pgtrigger's get_installation_status asks
    # once per trigger, each in its own transaction: 23 round trips on every customer page).
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT 'function', quote_ident(current_schema()), p.proname, p.prosrc, "
            "array_to_string(p.proconfig, ';') FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = current_schema() "
            "UNION ALL "
            "SELECT 'trigger', c.relname, t.tgname, obj_description(t.oid), t.tgenabled::text FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT t.tgisinternal AND n.nspname = current_schema()"
        )
        installed_functions, installed_triggers, function_configs = {}, {}, {}
        schema = "public"
        for kind, table, name, text, mode in cursor.fetchall():
            if kind == "function":
                installed_functions[name], function_configs[name], schema = text, mode, table
            else:
                installed_triggers[(table, name)] = (text, mode)

    for model, trigger in pgtrigger.registered():
        table = model._meta.db_table
        pgid = trigger.get_pgid(model)
        installed = installed_triggers.get((table, pgid))
        enabled = installed is not None and installed[1] == "O"
        if installed is None:
            problem = "missing"
        elif installed[0] != trigger.compile(model).hash:
            problem = "outdated: installed SQL differs from the model's declaration (run migrate)"
        elif not enabled:
            problem = "disabled (ALTER TABLE ... ENABLE TRIGGER, or pgtrigger enable)"
        elif installed_functions.get(pgid) != _expected_trigger_body(model, trigger):
            problem = "function body edited outside migrations (run pgtrigger install)"
        else:
            problem = ""
        statuses.append(TriggerStatus("trigger", trigger.name or pgid, table, problem))

    with connections[using].cursor() as cursor:
        for usage_model in apps.get_app_config("usage").get_models():
            for constraint in row_constraints(usage_model):
                present = row_constraint_present(cursor, usage_model, constraint)
                problem = (
                    "" if present else "missing (manage.py adopt --check prints the statement that adds it)"
                )
                statuses.append(
                    TriggerStatus("constraint", constraint.name, usage_model._meta.db_table, problem)
                )

    pinned = {f.name: f.pinned_config(schema) for f in definitions}
    for name, body in sorted(expected_sql_functions(definitions).items()):
        if name not in installed_functions:
            problem = "missing"
        elif installed_functions[name] != body:
            problem = "differs from the SQL in the code (run migrate: it installs the current definitions)"
        elif pinned.get(name) and [function_configs[name]] != pinned[name]:
            problem = f"search_path is not pinned to this schema, pg_temp last (run migrate): {function_configs[name]}"
        else:
            problem = ""
        statuses.append(TriggerStatus("function", name, "", problem))
    return statuses
