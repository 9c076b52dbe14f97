"""Cost of the counter triggers, as ratios measured in one run on one server (SPEC §11).

Each statement runs twice per repetition, once with the counter triggers enabled and once with them
disabled (ALTER TABLE ... DISABLE TRIGGER, inside the measured transaction and rolled back with it),
in alternating order; the table reports medians and their ratio.

    .venv/bin/python bench/triggers.py            # full size: 100,000 projects across 1,000 customers
    .venv/bin/python bench/triggers.py --scale 0.1

Runs in its own database (billing_ops_bench on the embedded server, or DATABASE_URL as given).
Progress goes to stderr; the result table (Markdown) to stdout.
"""

import argparse
import random
import statistics
import time

from common import fresh_bench_schema, log  # sets up Django on the benchmark database

from billing.db import psycopg_connect
from billing.models import UsagePeriodPlan
from usage.models import Project, UsageTracking

COUNTER_TRIGGERS = [
    ("projects", t.get_pgid(Project)) for t in Project._meta.triggers if "truncate" not in t.name
]
# --month-triggers: "on" and "off" are then new and old: usage_tracking's row triggers that note a month
# whose past periods changed (usage_months_changed) enabled or disabled, the counter triggers on in both.
MONTH_TRIGGERS = [
    ("usage_tracking", t.get_pgid(UsageTracking))
    for t in UsageTracking._meta.triggers
    if t.name in ("usage_tracking_ended_update", "usage_tracking_past_insert", "usage_tracking_past_delete")
]
# --plan-stamp: "on" and "off" are new and old: billing's trigger that stamps each usage period with the
# customer's live plan as it opens (billing 0021) enabled or disabled. No customer has a period when a
# bulk statement starts, so every bulk INSERT opens one per customer; the single-row INSERTs are events
# each dated in a month the customer has no period for yet, so each one opens a period.
PLAN_STAMP = [
    ("usage_tracking", t.get_pgid(UsagePeriodPlan))
    for t in UsagePeriodPlan._meta.triggers
    if t.name == "usage_tracking_plan_stamp"
]
# --plan-guard: new and old are the guard of usage_tracking.plan_id (billing 0024) on and off: what the
# counters' updates (the projects' statements here) pay for it.
PLAN_GUARD = [
    ("usage_tracking", t.get_pgid(UsagePeriodPlan))
    for t in UsagePeriodPlan._meta.triggers
    if t.name == "usage_tracking_protect_plan"
]
TOGGLED = COUNTER_TRIGGERS
VACUUMED = "projects"


def set_triggers(cur, enabled: bool):
    verb = "ENABLE" if enabled else "DISABLE"
    for table, pgid in TOGGLED:
        cur.execute(f"ALTER TABLE {table} {verb} TRIGGER {pgid}")


def timed_in_rollback(conn, statement, params=None, *, triggers: bool) -> float:
    """Seconds for one statement inside a transaction that is then rolled back."""
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        if not triggers:
            set_triggers(cur, False)
        start = time.perf_counter()
        cur.execute(statement, params)
        elapsed = time.perf_counter() - start
        cur.execute("ROLLBACK")
        # The rolled-back rows are dead tuples: clear them so every repetition starts alike.
        cur.execute(f"VACUUM {VACUUMED}")
        cur.execute("CHECKPOINT")
    return elapsed


def compare(conn, label, statement, params=None, reps=5):
    on, off = [], []
    for rep in range(reps):
        order = (True, False) if rep % 2 == 0 else (False, True)
        for triggers in order:
            (on if triggers else off).append(timed_in_rollback(conn, statement, params, triggers=triggers))
    return label, statistics.median(on), statistics.median(off)


def single_rows(conn, customer_ids, project_ids, *, commit: bool, rounds: int, block: int, opens=None):
    """Median seconds of single-row INSERT, UPDATE (archive) and DELETE statements.

    Triggers on and off alternate in blocks of ``block`` statements per kind, ``rounds`` times, so
    drift on the machine (checkpoints, other load) hits both sides alike. Every UPDATE and DELETE
    takes a row that no earlier statement touched.
    """
    rng = random.Random(42)
    samples = {(kind, on): [] for kind in ("INSERT", "UPDATE", "DELETE") for on in (True, False)}
    rows = iter(project_ids)
    with conn.cursor() as cur:
        for r in range(rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                set_triggers(cur, on)
                conn.commit()
                for kind in ("INSERT", "UPDATE", "DELETE"):
                    for _ in range(block):
                        if kind == "INSERT" and opens is not None:
                            sql, params = (
                                "INSERT INTO usage_events (customer_id, metric, quantity, occurred_at)"
                                " VALUES (%s, 'minutes', 1, %s)",
                                next(opens),
                            )
                        elif kind == "INSERT":
                            sql, params = (
                                "INSERT INTO projects (customer_id, name) VALUES (%s, 'single')",
                                [rng.choice(customer_ids)],
                            )
                        elif kind == "UPDATE":
                            sql, params = (
                                "UPDATE projects SET status = 'archived' WHERE id = %s",
                                [next(rows)],
                            )
                        else:
                            sql, params = "DELETE FROM projects WHERE id = %s", [next(rows)]
                        start = time.perf_counter()
                        cur.execute(sql, params)
                        if commit:
                            conn.commit()
                        samples[(kind, on)].append(time.perf_counter() - start)
                if not commit:
                    conn.rollback()
        set_triggers(cur, True)
        conn.commit()
    return {key: statistics.median(values) for key, values in samples.items()}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the SPEC sizes (default 1.0)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10, help="on/off rounds of single-row statements")
    parser.add_argument("--block", type=int, default=100, help="single-row statements per kind per block")
    parser.add_argument(
        "--month-triggers",
        action="store_true",
        help="compare new (usage_tracking's month-change triggers on) with old (off), counter triggers on",
    )
    parser.add_argument(
        "--plan-stamp",
        action="store_true",
        help="compare new (the plan stamp on usage periods as they open on) with old (off); bulk INSERTs open periods",
    )
    parser.add_argument(
        "--plan-guard",
        action="store_true",
        help="compare new (the guard of usage_tracking.plan_id on) with old (off), counter triggers on",
    )
    args = parser.parse_args()
    global TOGGLED, VACUUMED
    if args.plan_guard:
        TOGGLED = PLAN_GUARD
        assert len(PLAN_GUARD) == 1, PLAN_GUARD
        log("comparing new (plan_id guard on) with old (off); the counter triggers are on in both")
    if args.plan_stamp:
        TOGGLED, VACUUMED = PLAN_STAMP, "projects, usage_events, usage_tracking"
        assert len(PLAN_STAMP) == 1, PLAN_STAMP
        log("comparing new (plan stamp on) with old (off); the counter triggers are on in both")
    if args.month_triggers:
        TOGGLED = MONTH_TRIGGERS
        assert len(MONTH_TRIGGERS) == 3, MONTH_TRIGGERS
        log("comparing new (month-change triggers on) with old (off); the counter triggers are on in both")

    customers = max(10, int(1000 * args.scale))
    per_customer = 100
    fresh_bench_schema()

    with psycopg_connect() as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        server = cur.fetchone()[0]
        cur.execute("TRUNCATE customers CASCADE")
        cur.execute(
            "INSERT INTO customers (email) SELECT 'bench' || g || '@example.com' FROM generate_series(1, %s) g",
            [customers + 100],
        )
        cur.execute("SELECT id FROM customers ORDER BY email")
        all_ids = [r[0] for r in cur.fetchall()]
        ids, small, large = (
            all_ids[:customers],
            all_ids[customers : customers + 50],
            all_ids[customers + 50 :],
        )
        if args.plan_stamp:
            # Plans, and a live subscription for two customers in three (the others are on Free).
            from demo.data import plans_ensure

            plans = [p.pk for p in plans_ensure().values()]
            cur.execute(
                "INSERT INTO subscriptions (id, customer_id, plan_id, status, processor, current_period_start,"
                " current_period_end, created_at, updated_at)"
                " SELECT gen_random_uuid(), c.id, (%s::bigint[])[1 + n %% 4], 'active', 'manual',"
                " c.current_period_start, c.current_period_end, now(), now()"
                " FROM (SELECT id, current_period_start, current_period_end, row_number() OVER (ORDER BY id) AS n"
                "       FROM customers) c WHERE n %% 3 <> 0",
                [plans],
            )
        else:
            # Every customer starts with a counter row (the steady state of a running product).
            cur.execute("INSERT INTO projects (customer_id, name) SELECT id, 'seed' FROM customers")
            cur.execute("DELETE FROM projects")
        cur.execute("CREATE TEMP TABLE bench_customers AS SELECT unnest(%s::uuid[]) AS id", [ids])
        cur.execute("ANALYZE")

        rows = customers * per_customer
        insert_all = (
            "INSERT INTO projects (customer_id, name) "
            f"SELECT c.id, 'p' || g FROM bench_customers c, generate_series(1, {per_customer}) g"
        )
        results = []
        log(f"bulk INSERT of {rows:,} projects across {customers:,} customers ...")
        results.append(
            compare(conn, f"bulk INSERT {rows:,} rows / {customers:,} customers", insert_all, reps=args.reps)
        )

        if args.plan_stamp:
            months = 12
            log(
                f"bulk INSERT of {customers * months:,} events, each opening a period ({months} months back) ..."
            )
            results.append(
                compare(
                    conn,
                    f"bulk INSERT {customers * months:,} events opening {customers * months:,} periods",
                    "INSERT INTO usage_events (customer_id, metric, quantity, occurred_at) "
                    "SELECT c.id, 'minutes', 1, date_trunc('month', now()) - make_interval(months => g) "
                    f"FROM bench_customers c, generate_series(1, {months}) g",
                    reps=args.reps,
                )
            )

        cur.execute(insert_all)  # committed, with triggers: the rows the bulk UPDATE and DELETE work on
        cur.execute("ANALYZE projects")
        log("bulk UPDATE (archive) ...")
        results.append(
            compare(
                conn,
                f"bulk UPDATE (archive) {rows:,} rows",
                "UPDATE projects SET status = 'archived' WHERE status = 'active'",
                reps=args.reps,
            )
        )
        log("bulk DELETE ...")
        results.append(compare(conn, f"bulk DELETE {rows:,} rows", "DELETE FROM projects", reps=args.reps))

        conn.autocommit = False
        # Every single-row UPDATE and DELETE gets a row no earlier statement touched.
        per_run = 2 * 2 * args.rounds * args.block
        cur.execute("SELECT id FROM projects ORDER BY random() LIMIT %s", [2 * per_run])
        project_ids = [r[0] for r in cur.fetchall()]
        conn.rollback()
        # --plan-stamp: (customer, a day in a month with no period yet) for every single-row INSERT.
        opens = None
        if args.plan_stamp:
            cur.execute(
                "SELECT c.id, date_trunc('month', now()) - make_interval(months => g) + interval '3 days'"
                " FROM bench_customers c, generate_series(13, 13 + %s) g ORDER BY random()",
                [2 * 2 * args.rounds * args.block // customers + 1],
            )
            opens = iter([list(r) for r in cur.fetchall()])
            conn.rollback()
        single = {}
        for k, commit in enumerate((True, False)):
            log(
                f"single-row statements, {'own transaction each' if commit else 'inside transactions'}: {args.rounds} rounds of {args.block} per kind, triggers on and off ..."
            )
            single[commit] = single_rows(
                conn,
                ids,
                project_ids[k * per_run : (k + 1) * per_run],
                commit=commit,
                rounds=args.rounds,
                block=args.block,
                opens=opens,
            )
        conn.autocommit = True

        # Per-row cost when the customer already has 10 vs 2,000 projects.
        log("per-row cost at 10 vs 2,000 projects per customer ...")
        cur.execute(
            "INSERT INTO projects (customer_id, name) SELECT c, 'existing' FROM unnest(%s::uuid[]) c, generate_series(1, 10)",
            [small],
        )
        cur.execute(
            "INSERT INTO projects (customer_id, name) SELECT c, 'existing' FROM unnest(%s::uuid[]) c, generate_series(1, 2000)",
            [large],
        )
        cur.execute("ANALYZE projects")
        growth = []
        for label, group in (("10 projects per customer", small), ("2,000 projects per customer", large)):
            statement = "INSERT INTO projects (customer_id, name) SELECT c, 'one more' FROM unnest(%s::uuid[]) c, generate_series(1, 100)"
            growth.append(
                compare(
                    conn,
                    f"INSERT 100 rows into each of 50 customers with {label}",
                    statement,
                    [group],
                    reps=args.reps,
                )
            )

    print(
        f"Counter-trigger cost, PostgreSQL {server}, one run (`bench/triggers.py --scale {args.scale:g}`), medians of {args.reps}.\n"
    )
    print("| statement | triggers on | triggers off | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    for label, on, off in results:
        print(f"| {label} | {on * 1000:.0f} ms | {off * 1000:.0f} ms | {on / off:.2f}x | <= 1.5x |")
    for commit in (True, False):
        for kind in ("INSERT", "UPDATE", "DELETE"):
            on, off = single[commit][(kind, True)], single[commit][(kind, False)]
            how = "own transaction (with COMMIT)" if commit else "inside a transaction (no COMMIT)"
            target = "<= 1.2x" if commit else "(server CPU only)"
            print(
                f"| single-row {kind}, {how} | {on * 1e6:.0f} us | {off * 1e6:.0f} us | {on / off:.2f}x | {target} |"
            )
    small_on, small_off = growth[0][1], growth[0][2]
    large_on, large_off = growth[1][1], growth[1][2]
    for label, on, off in growth:
        print(f"| {label} | {on * 1000:.1f} ms | {off * 1000:.1f} ms | {on / off:.2f}x | |")
    print(
        f"\nCost ratio with 2,000 projects per customer vs 10: {(large_on / large_off) / (small_on / small_off):.2f} "
        "(1.00 = a row costs the same whatever the customer already has; target: no growth)."
    )


if __name__ == "__main__":
    main()
