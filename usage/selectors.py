"""Reads that several callers share: trigger health and counter drift (SPEC §4, §6)."""

import re
from dataclasses import dataclass
from pathlib import Path

import pgtrigger
from pgtrigger.core import OUTDATED, UNINSTALLED
from django.db import connections

SQL_DIR = Path(__file__).resolve().parent / "sql"

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
    """Name -> body of every helper function in usage/sql, the latest file's definition winning."""
    functions: dict[str, str] = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
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
            problem = "differs from usage/sql (run migrate, or re-apply the latest usage/sql file)"
        else:
            problem = ""
        statuses.append(TriggerStatus("function", name, "", problem))
    return statuses


# Each query returns (check, customer_id, email, target_id, tracked, actual) for drifted counters only.
_ACTIVE_PROJECTS = """
SELECT 'active_projects', c.id, c.email, t.id::text, coalesce(t.active_projects_count, 0), coalesce(a.n, 0)
FROM customers c
LEFT JOIN usage_tracking t
       ON t.customer_id = c.id AND t.period_start <= now() AND t.period_end > now()
LEFT JOIN (SELECT customer_id, count(*) AS n FROM projects WHERE status = 'active' GROUP BY customer_id) a
       ON a.customer_id = c.id
WHERE coalesce(t.active_projects_count, 0) <> coalesce(a.n, 0) {customer_filter}
"""

_METERED = """
WITH per_row AS (
    SELECT t.id, t.customer_id, t.ai_interactions_count, t.minutes_used,
           coalesce(sum(e.quantity) FILTER (WHERE e.metric = 'ai_interaction'), 0) AS ai,
           coalesce(sum(e.quantity) FILTER (WHERE e.metric = 'minutes'), 0) AS minutes
    FROM usage_tracking t
    LEFT JOIN usage_events e
           ON e.customer_id = t.customer_id AND e.occurred_at >= t.period_start AND e.occurred_at < t.period_end
    WHERE true {tracking_filter}
    GROUP BY t.id
), uncovered AS (
    SELECT e.customer_id, e.metric, sum(e.quantity) AS quantity
    FROM usage_events e
    WHERE NOT EXISTS (SELECT 1 FROM usage_tracking t WHERE t.customer_id = e.customer_id
                        AND e.occurred_at >= t.period_start AND e.occurred_at < t.period_end) {event_filter}
    GROUP BY e.customer_id, e.metric
)
SELECT 'ai_interactions', r.customer_id, c.email, r.id::text, r.ai_interactions_count, r.ai
FROM per_row r JOIN customers c ON c.id = r.customer_id WHERE r.ai_interactions_count <> r.ai
UNION ALL
SELECT 'minutes', r.customer_id, c.email, r.id::text, r.minutes_used, r.minutes
FROM per_row r JOIN customers c ON c.id = r.customer_id WHERE r.minutes_used <> r.minutes
UNION ALL
SELECT CASE u.metric WHEN 'ai_interaction' THEN 'ai_interactions' ELSE 'minutes' END,
       u.customer_id, c.email, NULL, 0, u.quantity
FROM uncovered u JOIN customers c ON c.id = u.customer_id
"""

_PER_PRESET = """
WITH per_preset AS (
    SELECT p.id, p.customer_id, p.usage_count, p.last_used_at, count(u.id) AS n, max(u.used_at) AS last_used
    FROM presets p LEFT JOIN preset_usage u ON u.preset_id = p.id
    WHERE true {preset_filter}
    GROUP BY p.id
)
"""
_PRESET_COUNT = _PER_PRESET + """
SELECT 'preset_usage_count', r.customer_id, c.email, r.id::text, r.usage_count, r.n
FROM per_preset r JOIN customers c ON c.id = r.customer_id WHERE r.usage_count <> r.n
"""
_PRESET_LAST_USED = _PER_PRESET + """
SELECT 'preset_last_used_at', r.customer_id, c.email, r.id::text, r.last_used_at, r.last_used
FROM per_preset r JOIN customers c ON c.id = r.customer_id WHERE r.last_used_at IS DISTINCT FROM r.last_used
"""


def counter_discrepancies(customer_ids=None, using: str = "default") -> list[dict]:
    """Every derived counter that differs from its source of truth (I1-I3), both directions.

    Covers counters with no source rows, source rows with no counter row (active projects with no
    current-period row, events outside every period row), per preset and per period row.
    """
    params = {"ids": [str(i) for i in customer_ids]} if customer_ids is not None else {}
    only = "AND {col} = ANY(%(ids)s::uuid[])" if customer_ids is not None else ""
    queries = [
        _ACTIVE_PROJECTS.format(customer_filter=only.format(col="c.id")),
        _METERED.format(
            tracking_filter=only.format(col="t.customer_id"), event_filter=only.format(col="e.customer_id")
        ),
        _PRESET_COUNT.format(preset_filter=only.format(col="p.customer_id")),
        _PRESET_LAST_USED.format(preset_filter=only.format(col="p.customer_id")),
    ]
    rows = []
    with connections[using].cursor() as cursor:
        for sql in queries:
            cursor.execute(sql, params)
            for check, customer_id, email, target_id, tracked, actual in cursor.fetchall():
                rows.append(
                    {
                        "check": check,
                        "customer_id": str(customer_id),
                        "email": email,
                        "target_id": target_id,
                        "tracked": tracked,
                        "actual": actual,
                    }
                )
    return rows
