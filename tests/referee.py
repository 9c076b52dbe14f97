"""The tests' own referee for the counter invariants I1-I4 (SPEC §4).

A plain recount written for the tests, sharing no code with what it judges: not the discrepancy
report (usage/services/drift.py, billing/ops/checks.py), not the triggers, not usage/sql or
billing/sql. It reads raw rows with plain SELECTs (no aggregate, no join, no function of ours) and
recounts them in Python, one invariant at a time, so a blind spot in the report's SQL cannot hide
the same drift from the trigger tests. Its findings carry the report's check names (SPEC §6) so the
report can be compared with it row for row.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection


@dataclass(frozen=True)
class Drift:
    """One counter that differs from its source rows (target_id None: source rows with no counter row)."""

    check: str
    customer_id: str
    target_id: str | None
    tracked: object
    actual: object


def _select(sql: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def _database_now() -> datetime:
    # The triggers' "current period" is the one holding the transaction's now(), not Python's clock.
    return _select("SELECT now()")[0][0]


def recount(customer_ids=None) -> list[Drift]:
    """Every counter of the customers in scope (all by default) that differs from its truth, sorted."""
    scope = None if customer_ids is None else {str(c) for c in customer_ids}

    def in_scope(customer_id) -> bool:
        return scope is None or str(customer_id) in scope

    now = _database_now()
    customers = [str(c) for (c,) in _select("SELECT id FROM customers") if in_scope(c)]
    periods = [
        (str(row_id), str(c), start, end, active, ai, minutes)
        for row_id, c, start, end, active, ai, minutes in _select(
            "SELECT id, customer_id, period_start, period_end, active_projects_count, ai_interactions_count, "
            "minutes_used FROM usage_tracking"
        )
        if in_scope(c)
    ]
    drift: list[Drift] = []

    # I1: the period row holding now() counts the customer's active projects; no row counts 0.
    active = defaultdict(int)
    for c, status in _select("SELECT customer_id, status FROM projects"):
        if status == "active":
            active[str(c)] += 1
    for c in customers:
        current = [p for p in periods if p[1] == c and p[2] <= now < p[3]]
        assert len(current) <= 1, f"customer {c} has {len(current)} period rows holding now()"
        row_id, tracked = (current[0][0], current[0][4]) if current else (None, 0)
        if tracked != active[c]:
            drift.append(Drift("active_projects", c, row_id, Decimal(tracked), Decimal(active[c])))

    # I2: each period row sums its customer's events of [period_start, period_end); events that no
    # row covers are summed per customer and metric (a counter missing entirely).
    events = defaultdict(list)  # customer -> [metric, quantity, occurred_at, covered by a row]
    for c, metric, quantity, at in _select(
        "SELECT customer_id, metric, quantity, occurred_at FROM usage_events"
    ):
        if in_scope(c):
            events[str(c)].append([metric, quantity, at, False])
    for row_id, c, start, end, _, ai, minutes in periods:
        sums = {"ai_interaction": Decimal(0), "minutes": Decimal(0)}
        for event in events[c]:
            metric, quantity, at, _ = event
            if start <= at < end:
                sums[metric] += quantity
                event[3] = True
        for check, tracked, actual in (
            ("ai_interactions", ai, sums["ai_interaction"]),
            ("minutes", minutes, sums["minutes"]),
        ):
            if tracked != actual:
                drift.append(Drift(check, c, row_id, Decimal(tracked), actual))
    uncovered = defaultdict(Decimal)
    for c, customer_events in events.items():
        for metric, quantity, _, is_covered in customer_events:
            if not is_covered:
                uncovered[(c, metric)] += quantity
    for (c, metric), actual in uncovered.items():
        if actual != 0:
            check = "ai_interactions" if metric == "ai_interaction" else "minutes"
            drift.append(Drift(check, c, None, Decimal(0), actual))

    # I3: a preset's usage_count is the number of its uses, last_used_at the latest of them.
    uses = defaultdict(list)
    for preset_id, used_at in _select("SELECT preset_id, used_at FROM preset_usage"):
        uses[str(preset_id)].append(used_at)
    for preset_id, c, usage_count, last_used_at in _select(
        "SELECT id, customer_id, usage_count, last_used_at FROM presets"
    ):
        if not in_scope(c):
            continue
        preset_uses = uses[str(preset_id)]
        if usage_count != len(preset_uses):
            drift.append(
                Drift(
                    "preset_usage_count",
                    str(c),
                    str(preset_id),
                    Decimal(usage_count),
                    Decimal(len(preset_uses)),
                )
            )
        latest = max(preset_uses) if preset_uses else None
        if last_used_at != latest:
            drift.append(Drift("preset_last_used_at", str(c), str(preset_id), last_used_at, latest))

    # I4: a grant's remaining is what was granted less everything the ledger drew from it.
    drawn = defaultdict(Decimal)
    for grant_id, quantity in _select("SELECT grant_id, quantity FROM credit_draws"):
        drawn[str(grant_id)] += quantity
    for grant_id, c, granted, remaining in _select(
        "SELECT id, customer_id, granted, remaining FROM credit_grants"
    ):
        if in_scope(c) and remaining != granted - drawn[str(grant_id)]:
            drift.append(
                Drift("credit_remaining", str(c), str(grant_id), remaining, granted - drawn[str(grant_id)])
            )

    return ordered(drift)


def ordered(drift) -> list[Drift]:
    """Drift in one canonical order, so two lists of it compare equal when they hold the same rows."""
    return sorted(
        drift, key=lambda d: (d.check, d.customer_id, d.target_id or "", str(d.tracked), str(d.actual))
    )


def assert_invariants(customer_ids=None) -> None:
    """I1-I4 hold for the customers in scope (all by default), by the referee's recount."""
    drift = recount(customer_ids)
    assert drift == [], "counters differ from their source rows:\n" + "\n".join(map(str, drift))


def drifted_checks(customer_ids=None) -> list[str]:
    return sorted({d.check for d in recount(customer_ids)})


def from_report(row: dict) -> Drift:
    """A row of the discrepancy report (JSON-shaped, SPEC §6) in the referee's terms."""

    def value(v):
        if v is None:
            return None
        if row["check"] == "preset_last_used_at":
            return datetime.fromisoformat(v) if isinstance(v, str) else v
        return Decimal(str(v))

    return Drift(
        row["check"], str(row["customer_id"]), row["target_id"], value(row["tracked"]), value(row["actual"])
    )
