"""The checks of usage's own counters (SPEC §6): set-based SQL, one pass per check, plain functions.

Each check compares one kind of counter with its source of truth for every row in scope and writes
only the rows that differ into ``usage_drift`` (the transaction's own rows of usage_drift_rows), returning its totals in
the same pass. Rows are then streamed from that table sorted by the size of the difference, so the
Python side holds a summary, never a row per customer.

Checks come in groups (``CheckGroup``): the counters one lock statement covers, their checks and
their fix. ``USAGE_CHECK_GROUPS`` are usage's; the layer above passes them, with its own, to
``drift_scan``: the report, reconciliation and diagnosis are composed in billing/ops.
"""

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection

from usage.metrics import METRICS
from usage.names import render
from usage.numbers import number_plain

# The scan's rows live in usage_drift_rows (usage 0017), seen through the view usage_drift, which
# shows the current transaction's rows only: no temporary table, as the app role may create none
# (SPEC §10). Before it writes, a scan deletes its transaction's earlier rows and those of
# transactions that have finished (older than every snapshot's xmin), skipping rows another
# scan is deleting, so two scans never wait on each other.
_DRIFT_CLEAR = """
DELETE FROM usage_drift_rows WHERE xact = pg_current_xact_id()::text::bigint
   OR ctid = ANY (ARRAY(SELECT ctid FROM usage_drift_rows
                        WHERE xact < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                        FOR UPDATE SKIP LOCKED))
"""

_DRIFT_MINE = "DELETE FROM usage_drift_rows WHERE xact = pg_current_xact_id_if_assigned()::text::bigint"


def drift_clear() -> None:
    """Delete this transaction's scan rows: call it last in a transaction that scanned, so a read-only
    report (Finance's) commits no row at all."""
    with connection.cursor() as cursor:
        cursor.execute(_DRIFT_MINE)


_DRIFT_ROW = {"check_name", "customer_id", "target_id", "tracked", "actual", "difference"}
# The scan's view, and take_rows' name for the rows it deletes: billing-ops' own names.
DRIFT_COLUMNS = {"usage_drift": _DRIFT_ROW, "taken": _DRIFT_ROW, "usage_drift_rows": _DRIFT_ROW | {"xact"}}


def drift_sql(sql: str) -> str:
    """``sql`` with the product's table and column names (usage/names.py); usage_drift keeps its own."""
    return render(sql, extra_tables=DRIFT_COLUMNS)


# Each statement: (per-target comparison) -> drifted rows into usage_drift, totals per check out.
# {scope} filters customer ids: "" for everyone, or "AND {col} = ANY(%(ids)s)".
_ACTIVE_PROJECTS = """
WITH per AS (
    SELECT c.id AS customer_id, t.id::text AS target_id,
           coalesce(t.active_projects_count, 0) AS tracked, coalesce(a.n, 0) AS actual
    FROM customers c
    LEFT JOIN usage_tracking t
           ON t.customer_id = c.id AND usage_period_current(t.period_start, t.period_end)
    LEFT JOIN (SELECT customer_id, count(*) AS n FROM projects
               WHERE status = 'active' {scope_projects} GROUP BY customer_id) a
           ON a.customer_id = c.id
    WHERE true {scope_customers}
), drifted AS (
    INSERT INTO usage_drift
    SELECT 'active_projects', customer_id, target_id, to_jsonb(tracked), to_jsonb(actual), actual - tracked
    FROM per WHERE tracked <> actual OR {everything}
)
SELECT 'active_projects', count(*), coalesce(sum(tracked), 0), coalesce(sum(actual), 0) FROM per
"""

# Events find their period row through width_bucket() over the customer's period starts, exact for
# periods that start at any instant (the rows of a customer never overlap: usage_tracking_periods_disjoint).
# Shaped as the bare aggregate scan of usage_events is: its events in index order (usage_events_sum_cover),
# merge-joined with each customer's period starts and ends as arrays, summed per (customer, period row's
# start) with both metrics side by side (NULL: outside every period row), which is the order of
# usage_tracking's own key (customer_id, period_start): the sums meet the counters by a merge full join
# on it, with no window, no array lookups and no second grouping per customer. The period rows are read
# from one sort of usage_tracking each time (an index scan in customer order read a heap page per row:
# 2.1M buffers at 1M customers). The totals are the counters' (one scan of usage_tracking) plus the
# differences the insert returns, so `per` is read once (materialized to be read twice, it wrote 333 MB
# to disk at 1M).
_METERED = """
WITH periods AS (
    SELECT customer_id, array_agg(period_start ORDER BY period_start) AS starts,
           array_agg(period_end ORDER BY period_start) AS ends
    FROM (SELECT customer_id, period_start, period_end FROM usage_tracking
          WHERE true {scope_tracking} OFFSET 0) AS t
    GROUP BY customer_id
), bucketed AS (
    SELECT e.customer_id, e.metric, e.quantity, e.occurred_at, p.starts, p.ends,
           width_bucket(e.occurred_at, p.starts) AS b
    FROM usage_events e LEFT JOIN periods p ON p.customer_id = e.customer_id
    WHERE true {scope_events}
), sums AS (  -- per customer and period row (its start; NULL: outside every row), both metrics
    SELECT customer_id, CASE WHEN b > 0 AND occurred_at < ends[b] THEN starts[b] END AS period_start,
           sum(quantity) FILTER (WHERE metric = 'ai_interaction') AS ai,
           sum(quantity) FILTER (WHERE metric = 'minutes') AS minutes
    FROM bucketed GROUP BY 1, 2
), compared AS (  -- each period row beside its events' sums; events outside every row have no id
    SELECT coalesce(t.customer_id, s.customer_id) AS customer_id, t.id,
           t.ai_interactions_count AS ai_tracked, coalesce(s.ai, 0) AS ai,
           t.minutes_used AS minutes_tracked, coalesce(s.minutes, 0) AS minutes
    FROM (SELECT customer_id, period_start, id, ai_interactions_count, minutes_used FROM usage_tracking
          WHERE true {scope_tracking} OFFSET 0) AS t
    FULL JOIN sums s ON s.customer_id = t.customer_id AND s.period_start = t.period_start
), per AS (  -- one row per counter and check; only rows that differ are split (or every one: everything)
    SELECT c.customer_id, m.check_name, m.target_id, m.tracked, m.actual
    FROM compared c
    CROSS JOIN LATERAL (
        SELECT 'ai_interactions', c.id::text, c.ai_tracked, c.ai WHERE c.id IS NOT NULL
        UNION ALL
        SELECT 'minutes', c.id::text, c.minutes_tracked, c.minutes WHERE c.id IS NOT NULL
        UNION ALL  -- source rows with no counter row: events outside every period row
        SELECT 'ai_interactions', NULL, 0, c.ai WHERE c.id IS NULL AND c.ai <> 0
        UNION ALL
        SELECT 'minutes', NULL, 0, c.minutes WHERE c.id IS NULL AND c.minutes <> 0
    ) AS m(check_name, target_id, tracked, actual)
    WHERE c.id IS NULL OR c.ai_tracked <> c.ai OR c.minutes_tracked <> c.minutes OR {everything}
), drifted AS (
    INSERT INTO usage_drift
    SELECT check_name, customer_id, target_id, to_jsonb(tracked), to_jsonb(actual), actual - tracked
    FROM per WHERE tracked <> actual OR {everything}
    RETURNING check_name, target_id, difference
), totals AS (
    SELECT count(*) AS n, coalesce(sum(ai_interactions_count), 0) AS ai, coalesce(sum(minutes_used), 0) AS minutes
    FROM usage_tracking WHERE true {scope_tracking}
)
SELECT m.check_name, k.n + coalesce(d.outside, 0), m.tracked, m.tracked + coalesce(d.difference, 0)
FROM totals k
CROSS JOIN LATERAL (VALUES ('ai_interactions', k.ai), ('minutes', k.minutes)) AS m(check_name, tracked)
LEFT JOIN (SELECT check_name, count(*) FILTER (WHERE target_id IS NULL) AS outside, sum(difference) AS difference
           FROM drifted GROUP BY check_name) AS d ON d.check_name = m.check_name
"""

# Read once: each preset beside its uses (a hash join of two grouped scans), only the presets that
# differ split into their rows (or every one: everything); the totals are the counters' (one scan of
# presets) plus what the insert returns. Read four times as a CTE, `per` wrote 140 MB to disk at 1M.
_PRESETS = """
WITH per AS (
    SELECT p.customer_id, p.id::text AS target_id, p.usage_count, p.last_used_at,
           coalesce(u.n, 0) AS n, u.last_used
    FROM presets p
    LEFT JOIN (SELECT preset_id, count(*) AS n, max(used_at) AS last_used FROM preset_usage
               WHERE true {scope_uses} GROUP BY preset_id) u ON u.preset_id = p.id
    WHERE true {scope_presets}
), drifted AS (
    INSERT INTO usage_drift
    SELECT m.check_name, per.customer_id, per.target_id, m.tracked, m.actual, m.difference
    FROM per
    CROSS JOIN LATERAL (
        SELECT 'preset_usage_count', to_jsonb(per.usage_count), to_jsonb(per.n), per.n - per.usage_count
        WHERE per.usage_count <> per.n OR {everything}
        UNION ALL
        SELECT 'preset_last_used_at', to_jsonb(per.last_used_at), to_jsonb(per.last_used),
               extract(epoch FROM per.last_used - per.last_used_at)
        WHERE per.last_used_at IS DISTINCT FROM per.last_used OR {everything}
    ) AS m(check_name, tracked, actual, difference)
    WHERE per.usage_count <> per.n OR per.last_used_at IS DISTINCT FROM per.last_used OR {everything}
    RETURNING check_name, tracked, actual, difference
), totals AS (
    SELECT count(*) AS n, coalesce(sum(usage_count), 0) AS uses, count(last_used_at) AS used
    FROM presets p WHERE true {scope_presets}
), differences AS (
    SELECT coalesce(sum(difference) FILTER (WHERE check_name = 'preset_usage_count'), 0) AS uses,
           count(actual) FILTER (WHERE check_name = 'preset_last_used_at')
           - count(tracked) FILTER (WHERE check_name = 'preset_last_used_at') AS used
    FROM drifted
)
SELECT 'preset_usage_count', k.n, k.uses, k.uses + d.uses FROM totals k, differences d
UNION ALL
SELECT 'preset_last_used_at', k.n, k.used, k.used + d.used FROM totals k, differences d
"""


_SCOPE_COLUMNS = {
    "scope_customers": "c.id",
    "scope_projects": "customer_id",
    "scope_tracking": "customer_id",
    "scope_events": "e.customer_id",
    "scope_uses": "preset_id IN (SELECT id FROM presets WHERE customer_id = ANY(%(ids)s::uuid[]))",
    "scope_presets": "p.customer_id",
}


def _scoped(sql: str, ids: list[str] | None, everything: bool = False, columns: dict | None = None) -> str:
    """Fill a check's {scope_*} placeholders: nothing for everyone, else a filter on the customer ids.

    A column given as a full condition (containing "%(ids)s") is used as it is.
    """
    cols = {**_SCOPE_COLUMNS, **(columns or {})}
    flag = {"everything": "true" if everything else "false"}
    if ids is None:
        return sql.format(**{k: "" for k in cols}, **flag)
    filled = {k: f"AND {v}" if "%(ids)s" in v else f"AND {v} = ANY(%(ids)s::uuid[])" for k, v in cols.items()}
    return sql.format(**filled, **flag)


@dataclass
class Scan:
    """The drifted rows of one scope, held in usage_drift for the enclosing transaction."""

    customers_checked: int = 0
    metrics: dict = field(default_factory=dict)

    @property
    def customers_with_drift(self) -> int:
        return _scalar(drift_sql("SELECT count(DISTINCT customer_id) FROM usage_drift"))

    @property
    def discrepancies(self) -> int:
        return _scalar(drift_sql("SELECT count(*) FROM usage_drift"))

    def rows(self, chunk_size: int = 2000) -> Iterator[dict]:
        """Drifted counters, largest difference first, streamed through a server-side cursor."""
        with connection.chunked_cursor() as cursor:
            cursor.execute(drift_sql(_ROWS.format(source="usage_drift")))
            while batch := cursor.fetchmany(chunk_size):
                yield from map(_row, batch)

    def take_rows(self) -> list[dict]:
        """The same rows as a list, deleted as they are read (one statement, so a page's one-customer
        diagnosis costs no extra query): the last use of the scan in its transaction."""
        with connection.cursor() as cursor:
            cursor.execute(
                drift_sql(f"WITH taken AS ({_DRIFT_MINE} RETURNING *) " + _ROWS.format(source="taken"))
            )
            return list(map(_row, cursor.fetchall()))


_ROWS = (
    "SELECT d.check_name, d.customer_id, c.email, d.target_id, d.tracked, d.actual, d.difference "
    "FROM {source} d LEFT JOIN customers c ON c.id = d.customer_id "
    "ORDER BY abs(d.difference) DESC NULLS LAST, d.check_name, d.customer_id"
)


def _row(row: tuple) -> dict:
    check, customer_id, email, target_id, tracked, actual, difference = row
    return {
        "check": check,
        "customer_id": str(customer_id),
        "email": email,
        "target_id": target_id,
        "tracked": _plain(tracked),
        "actual": _plain(actual),
        "difference": _plain(difference),
    }


def _plain(value):
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_float=Decimal)
        except ValueError:
            return value
    return number_plain(value)


def _scalar(sql, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


@dataclass(frozen=True)
class CheckGroup:
    """Counters that one lock statement covers: their checks, the lock, and the fix.

    Reconciliation fixes each group in its own transaction (the triggers lock the groups' tables
    separately, so holding one group's rows while waiting for another's could deadlock with a product
    transaction that writes both). ``statements`` write drifted rows into usage_drift and
    return (check, rows, tracked, actual); ``fix()`` sets the drifted rows of its checks to the truth
    and returns how many it set; ``scope_columns`` adds {scope_*} placeholders for other tables.
    """

    name: str
    checks: tuple[str, ...]
    statements: tuple[str, ...]
    lock_sql: str
    fix: Callable[[], int]
    scope_columns: dict = field(default_factory=dict)


def drift_scan(
    customer_ids: Iterable | None = None, *, groups: tuple[CheckGroup, ...], everything: bool = False
) -> Scan:
    """Run the checks of ``groups`` over the scope (inside the caller's transaction).

    ``everything`` keeps the counters that match as well (difference 0): one customer's diagnosis
    shows every counter beside its truth, computed by the same SQL as the report.
    """
    if not connection.in_atomic_block:
        raise RuntimeError(
            "drift_scan() must run inside transaction.atomic(): its rows are the transaction's"
        )
    ids = [str(i) for i in customer_ids] if customer_ids is not None else None
    scan = Scan()
    with connection.cursor() as cursor:
        cursor.execute(_DRIFT_CLEAR)
        for group in groups:
            for sql in group.statements:
                cursor.execute(drift_sql(_scoped(sql, ids, everything, group.scope_columns)), {"ids": ids})
                for check, n, tracked, actual in cursor.fetchall():
                    scan.metrics[check] = {"rows": n, "tracked": _plain(tracked), "actual": _plain(actual)}
                    if check == "active_projects":
                        scan.customers_checked = n
            for check in group.checks:
                scan.metrics.setdefault(check, {"rows": 0, "tracked": 0, "actual": 0})
    return scan


def scan_summary(scan: Scan) -> dict:
    return {
        "customers_checked": scan.customers_checked,
        "customers_with_drift": scan.customers_with_drift,
        "discrepancies": scan.discrepancies,
        "metrics": {
            check: {"tracked": m["tracked"], "actual": m["actual"]} for check, m in scan.metrics.items()
        },
    }


def _recount(function: str, checks: tuple[str, ...]) -> int:
    """Set the drifted customers' counters to the truth through a SECURITY DEFINER recount function.

    The function computes what it writes from the source rows (the drift table only names the
    customers): the app role can recount, never write a value of its own. Returns the counters set,
    the group's drifted rows (the rows stay locked since the re-check, so they are the ones changed).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            drift_sql(
                f"SELECT {function}(array_agg(DISTINCT customer_id)), count(*) FROM usage_drift "
                "WHERE check_name = ANY(%s)"
            ),
            [list(checks)],
        )
        return cursor.fetchone()[1]


def _fix_tracking() -> int:
    return _recount("usage_tracking_recount", tuple(metric.check for metric in METRICS))


def _fix_presets() -> int:
    return _recount("usage_presets_recount", ("preset_usage_count", "preset_last_used_at"))


TRACKING_CHECKS = CheckGroup(
    "usage_tracking",
    ("active_projects", "ai_interactions", "minutes"),
    (_ACTIVE_PROJECTS, _METERED),
    "SELECT 1 FROM usage_tracking WHERE customer_id = ANY(%s::uuid[]) ORDER BY customer_id, period_start FOR UPDATE",
    _fix_tracking,
)
PRESET_CHECKS = CheckGroup(
    "presets",
    ("preset_usage_count", "preset_last_used_at"),
    (_PRESETS,),
    "SELECT 1 FROM presets WHERE customer_id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE",
    _fix_presets,
)
USAGE_CHECK_GROUPS = (TRACKING_CHECKS, PRESET_CHECKS)
