"""Consume throughput and overshoot with 16 concurrent clients (SPEC §11), as ratios from one run.

Each client is a thread with its own connection calling ``billing_consume`` (one transaction per
call, with an idempotency key, as the product would). The baseline is the same harness running a
bare single-row ``UPDATE … SET n = n + 1`` on the same server: on one hot row, and on rows spread
like the customers. Allowance plus credit is set below what the clients ask for, so denials happen
and overshoot (usage beyond allowance + credit) is counted: it must be 0.

    .venv/bin/python bench/consume.py                 # 16 clients x 400 calls per scenario
    .venv/bin/python bench/consume.py --clients 16 --calls 1000

Runs in its own database (billing_ops_bench). Progress on stderr; the Markdown table on stdout.
"""

import argparse
import random
import threading
import time

from common import fresh_bench_schema, log  # sets up Django on the benchmark database

from billing.db import psycopg_connect


def run_clients(clients: int, calls: int, op) -> float:
    """Calls per second with `clients` threads each making `calls` calls of op(conn, client, i)."""
    barrier = threading.Barrier(clients + 1)
    errors = []

    def client(n):
        try:
            with psycopg_connect() as conn:
                conn.autocommit = True
                barrier.wait()
                for i in range(calls):
                    op(conn, n, i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            raise

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"a client failed: {errors[0]!r}")
    return clients * calls / elapsed


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--calls", type=int, default=400, help="calls per client per scenario")
    parser.add_argument("--customers", type=int, default=1000, help="customers in the spread scenario")
    parser.add_argument(
        "--month-triggers",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also compare consume spread over the customers with usage_tracking's month-change triggers "
        "on (new) and off (old), alternating, ROUNDS times each",
    )
    parser.add_argument(
        "--plan-triggers",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also compare consume spread over the customers with billing's triggers on usage_tracking.plan_id "
        "(the stamp at open and the guard) on (new) and off (old), alternating, ROUNDS times each",
    )
    args = parser.parse_args()
    total = args.clients * args.calls
    fresh_bench_schema()

    from demo.data import plans_ensure

    plans_ensure()
    with psycopg_connect() as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        server = cur.fetchone()[0]
        cur.execute("SHOW synchronous_commit")
        sync = cur.fetchone()[0]
        # Free allows 80 % of what the hot customer's clients ask for, credit another 10 %.
        allowance = int(total * 0.8)
        credit = int(total * 0.1)
        cur.execute("UPDATE plans SET ai_interactions_per_period = %s WHERE code = 'free'", [allowance])
        cur.execute(
            "INSERT INTO customers (email) SELECT 'consume' || g || '@example.com' FROM generate_series(0, %s) g",
            [args.customers],
        )
        cur.execute("SELECT id FROM customers ORDER BY email")
        ids = [r[0] for r in cur.fetchall()]
        hot, spread = ids[0], ids[1:]
        cur.execute(
            "INSERT INTO credit_grants (id, customer_id, metric, granted, remaining, source, created_by, reason, created_at) "
            "VALUES (gen_random_uuid(), %s, 'ai_interaction', %s, %s, 'purchase', 'bench', '', now())",
            [hot, credit, credit],
        )
        cur.execute("CREATE TABLE bench_counter (id integer PRIMARY KEY, n bigint NOT NULL DEFAULT 0)")
        cur.execute("INSERT INTO bench_counter (id) SELECT g FROM generate_series(0, %s) g", [args.customers])
        # Open every customer's period row first (the steady state), as consume would on its first call.
        cur.execute("SELECT count(*) FROM customers c, billing_period_lock(c.id)")
        cur.execute("ANALYZE")

    results = []
    for label, consume_op, bare_op in (
        (
            "one hot customer",
            lambda conn, n, i: conn.execute(
                "SELECT allowed FROM billing_consume(%s, 'ai_interaction', 1, %s)", [hot, f"hot-{n}-{i}"]
            ),
            lambda conn, n, i: conn.execute("UPDATE bench_counter SET n = n + 1 WHERE id = 0"),
        ),
        (
            f"{args.customers:,} customers",
            lambda conn, n, i: conn.execute(
                "SELECT allowed FROM billing_consume(%s, 'ai_interaction', 1, %s)",
                [random.choice(spread), f"spread-{n}-{i}"],
            ),
            lambda conn, n, i: conn.execute(
                "UPDATE bench_counter SET n = n + 1 WHERE id = %s", [random.randint(1, args.customers)]
            ),
        ),
    ):
        log(f"{label}: bare UPDATE, {args.clients} clients x {args.calls} ...")
        bare = run_clients(args.clients, args.calls, bare_op)
        log(f"{label}: billing_consume, {args.clients} clients x {args.calls} ...")
        consumed = run_clients(args.clients, args.calls, consume_op)
        results.append((label, bare, consumed))

    from billing.models import UsagePeriodPlan
    from usage.models import UsageTracking

    month_names = ("usage_tracking_ended_update", "usage_tracking_past_insert", "usage_tracking_past_delete")
    plan_names = ("usage_tracking_plan_stamp", "usage_tracking_protect_plan")
    for rounds, what, model, names in (
        (args.month_triggers, "month-change triggers", UsageTracking, month_names),
        (args.plan_triggers, "plan stamp and guard", UsagePeriodPlan, plan_names),
    ):
        if not rounds:
            continue
        pgids = [t.get_pgid(model) for t in model._meta.triggers if t.name in names]
        assert len(pgids) == len(names), pgids
        rates = {True: [], False: []}
        for r in range(rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                with psycopg_connect() as conn:
                    conn.autocommit = True
                    for pgid in pgids:
                        conn.execute(
                            f"ALTER TABLE usage_tracking {'ENABLE' if on else 'DISABLE'} TRIGGER {pgid}"
                        )
                log(f"{args.customers:,} customers, {what} {'on (new)' if on else 'off (old)'} ...")
                rates[on].append(
                    run_clients(
                        args.clients,
                        args.calls,
                        lambda conn, n, i, r=r, on=on, what=what: conn.execute(
                            "SELECT allowed FROM billing_consume(%s, 'ai_interaction', 1, %s)",
                            [random.choice(spread), f"{what[:5]}-{r}-{on}-{n}-{i}"],
                        ),
                    )
                )
        with psycopg_connect() as conn:
            conn.autocommit = True
            for pgid in pgids:
                conn.execute(f"ALTER TABLE usage_tracking ENABLE TRIGGER {pgid}")
        print(f"\n| consume, spread | old ({what} off) | new (on) | new / old |")
        print("|---|---:|---:|---:|")
        for r, (new, old) in enumerate(zip(rates[True], rates[False], strict=True), start=1):
            print(f"| round {r} | {old:,.0f}/s | {new:,.0f}/s | {new / old:.3f} |")
        new, old = sum(rates[True]), sum(rates[False])
        print(
            f"| all | {old / len(rates[False]):,.0f}/s | {new / len(rates[True]):,.0f}/s | {new / old:.3f} |\n"
        )

    with psycopg_connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT ai_interactions_count FROM usage_tracking WHERE customer_id = %s", [hot])
        used = cur.fetchone()[0]
        cur.execute("SELECT remaining FROM credit_grants WHERE customer_id = %s", [hot])
        remaining = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FILTER (WHERE allowed), count(*) FROM consume_requests WHERE customer_id = %s",
            [hot],
        )
        allowed, answered = cur.fetchone()
        cur.execute(
            "SELECT count(*) FROM usage_tracking t JOIN plans p ON p.code = 'free' "
            "WHERE t.ai_interactions_count > p.ai_interactions_per_period + coalesce("
            "  (SELECT sum(granted) FROM credit_grants g WHERE g.customer_id = t.customer_id), 0)"
        )
        over = cur.fetchone()[0]
    overshoot = max(0, used - allowance - credit)

    print(
        f"Consume with {args.clients} concurrent clients, {args.calls} calls each (PostgreSQL {server}, "
        f"synchronous_commit={sync}; one transaction per call)\n"
    )
    print("| scenario | bare UPDATE n = n + 1 (calls/s) | billing_consume (calls/s) | ratio | target |")
    print("|---|---:|---:|---:|---|")
    for label, bare, consumed in results:
        print(f"| {label} | {bare:,.0f} | {consumed:,.0f} | {consumed / bare:.0%} | >= 50 % |")
    print(
        f"\nHot customer: {answered:,} calls for an allowance of {allowance:,} plus {credit:,} credit: "
        f"{allowed:,} allowed, usage {used:,.0f}, credit left {remaining:,.0f}; overshoot {overshoot:,.0f} (must be 0). "
        f"Customers over allowance + credit: {over} (must be 0)."
    )


if __name__ == "__main__":
    main()
