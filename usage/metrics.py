"""The metric catalogue (SPEC §3): one definition of each counter that a plan limits.

Python reads ``METRICS``; SQL reads the same rows through ``usage_metrics()``, a function generated
from this module and installed by every ``migrate`` (usage/sql_functions.py), so a label or a column
is written once. ``allowance`` names the plans column (billing's) that limits the metric per period.
"""

from dataclasses import dataclass

from django.utils.text import capfirst


@dataclass(frozen=True)
class Metric:
    code: str  # usage_events.metric and credit_grants.metric; the gauge's check name
    check: str  # the discrepancy report's check of its counter
    counter: str  # the usage_tracking column
    allowance: str  # the plans column: the allowance per period (NULL = unlimited)
    label: str  # as written mid-sentence; capfirst() at the start of one
    unit: str
    whole: bool  # counted in whole numbers only
    metered: bool  # from usage events (consumed, credited); else a gauge of source rows

    @property
    def title(self) -> str:
        return capfirst(self.label)


ACTIVE_PROJECTS = Metric(
    "active_projects",
    "active_projects",
    "active_projects_count",
    "max_active_projects",
    "active projects",
    "projects",
    whole=True,
    metered=False,
)
AI_INTERACTIONS = Metric(
    "ai_interaction",
    "ai_interactions",
    "ai_interactions_count",
    "ai_interactions_per_period",
    "AI interactions",
    "interactions",
    whole=True,
    metered=True,
)
MINUTES = Metric(
    "minutes",
    "minutes",
    "minutes_used",
    "minutes_per_period",
    "transcription minutes",
    "minutes",
    whole=False,
    metered=True,
)
METRICS: tuple[Metric, ...] = (ACTIVE_PROJECTS, AI_INTERACTIONS, MINUTES)
METERED: tuple[Metric, ...] = tuple(m for m in METRICS if m.metered)
BY_CODE = {m.code: m for m in METRICS}


def metric_label(code: str) -> str:
    """A metric's code as written mid-sentence ("transcription minutes"); an unknown code as it is."""
    known = BY_CODE.get(code)
    return known.label if known else code


BY_CHECK = {m.check: m for m in METRICS}


def check_label(check: str) -> str:
    """A drift check's name for people: a metric's label ("AI interactions", not "ai interactions");
    any other check in words ("credit remaining")."""
    known = BY_CHECK.get(check)
    return known.label if known else check.replace("_", " ")


def _literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "'" + str(value).replace("'", "''") + "'"


def metrics_sql_function():
    """``usage_metrics()``: the catalogue as rows, for SQL (billing_consume, findings, reports)."""
    from usage.sql_functions import SqlFunction

    rows = ",\n    ".join("(" + ", ".join(_literal(getattr(m, f)) for f in _COLUMNS) + ")" for m in METRICS)
    body = f"\n    VALUES\n    {rows}\n"
    text = (
        "-- Generated from usage/metrics.py (the metric catalogue); edit it there.\n"
        "CREATE OR REPLACE FUNCTION usage_metrics()\n"
        "RETURNS TABLE ("
        + ", ".join(
            f"{_SQL_NAMES.get(f, f)} {'boolean' if f in ('whole', 'metered') else 'text'}" for f in _COLUMNS
        )
        + ")\n"
        f"LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $${body}$$;\n"
    )
    from usage.names import render

    text, body = render(text), render(body)
    return SqlFunction("usage_metrics", text, body)


_COLUMNS = ("code", "check", "counter", "allowance", "label", "unit", "whole", "metered")
_SQL_NAMES = {"check": "check_name"}  # CHECK is reserved in SQL
