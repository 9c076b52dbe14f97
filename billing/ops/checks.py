"""Every check the operations run, composed here: usage's checks of its own counters with billing's.

The report, reconciliation and diagnosis (billing/ops) scan ``CHECK_GROUPS``; health (check_triggers,
/healthz, the system check, the findings) compares the triggers and the functions of both apps' SQL
folders. usage knows nothing of billing: this module passes usage's functions what to check.
"""

from django.db import connection, transaction

from billing import selectors as billing_selectors
from usage import selectors as usage_selectors
from usage.selectors import TriggerStatus
from usage.selectors import trigger_health as _trigger_health
from usage.services.drift import USAGE_CHECK_GROUPS, CheckGroup, Scan
from usage.services.drift import drift_scan as _drift_scan

# --- I4: credit_grants.remaining, billing's own counter ------------------------------------------

_CREDIT_REMAINING = """
WITH per AS (
    SELECT g.customer_id, g.id::text AS target_id, g.remaining AS tracked, g.granted - coalesce(d.drawn, 0) AS actual
    FROM credit_grants g
    LEFT JOIN (SELECT grant_id, sum(quantity) AS drawn FROM credit_draws WHERE true {scope_draws} GROUP BY grant_id) d
           ON d.grant_id = g.id
    WHERE true {scope_grants}
), drifted AS (
    INSERT INTO usage_drift
    SELECT 'credit_remaining', customer_id, target_id, to_jsonb(tracked), to_jsonb(actual), actual - tracked
    FROM per WHERE tracked <> actual OR {everything}
)
SELECT 'credit_remaining', count(*), coalesce(sum(tracked), 0), coalesce(sum(actual), 0) FROM per
"""


def _fix_credit_remaining() -> int:
    """remaining = granted - draws, set by billing_credit_grants_recount (SECURITY DEFINER, billing/sql):
    it computes what it writes, the drift table only names the customers."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT billing_credit_grants_recount(array_agg(DISTINCT customer_id)), count(*) "
            "FROM usage_drift WHERE check_name = 'credit_remaining'"
        )
        return cursor.fetchone()[1]


CREDIT_CHECKS = CheckGroup(
    "credit_grants",
    ("credit_remaining",),
    (_CREDIT_REMAINING,),
    "SELECT 1 FROM credit_grants WHERE customer_id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE",
    _fix_credit_remaining,
    scope_columns={"scope_draws": "customer_id", "scope_grants": "g.customer_id"},
)


CHECK_GROUPS: tuple[CheckGroup, ...] = (*USAGE_CHECK_GROUPS, CREDIT_CHECKS)


def drift_scan(customer_ids=None, *, groups=CHECK_GROUPS, everything: bool = False) -> Scan:
    """Every counter check over the scope, inside the caller's transaction (usage/services/drift.py)."""
    return _drift_scan(customer_ids, groups=groups, everything=everything)


def drift_rows(customer_ids=None, *, everything: bool = False) -> list[dict]:
    """The drifted counters of the scope (every counter with ``everything``), in their own transaction."""
    with transaction.atomic():
        return drift_scan(customer_ids, everything=everything).take_rows()


def trigger_health(using: str = "default") -> list[TriggerStatus]:
    """Every trigger, and every function of usage's and billing's SQL: present, enabled, current."""
    definitions = [*usage_selectors.sql_definitions(), *billing_selectors.sql_definitions()]
    return _trigger_health(using=using, definitions=definitions)
