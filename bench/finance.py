"""Finance's pages at scale (SPEC §11): each page's time and query count at 1M customers.

Generates --scale x 1M customers on the four plans, twelve monthly usage periods each (usage_tracking,
the counters the pages read; written as recounts, set-based), purchased and goodwill credit for 5 % of
them with draws, refunds and expiries in the ledger, and twelve weeks of run history. Then a
superuser's test client opens each finance page (and streams each export) and the table says how long
each took, how many queries it ran, and the export's peak Python memory.

    .venv/bin/python bench/finance.py --scale 0.01    # 10k customers, seconds
    .venv/bin/python bench/finance.py                 # 1M customers, 12M usage periods

Runs in its own database (billing_ops_bench, rebuilt); progress on stderr, the table on stdout.
"""

import argparse
import os
import time
import tracemalloc

os.environ.setdefault("ALLOWED_HOSTS", "testserver")  # the test client's host

from common import fresh_bench_schema, log  # sets up Django on the benchmark database
from django.db import connection, transaction
from django.test import Client

from billing.finance.selectors import last_full_month, month_shift
from demo.data import plans_ensure

MONTHS = 12


def sql(statement, params=None):
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])  # always with params: "%%" means "%"
        return cursor.fetchall() if cursor.description else None


def timed(label, fn):
    log(f"{label} ...")
    start = time.perf_counter()
    result = fn()
    log(f"  {time.perf_counter() - start:.1f} s")
    return result


def generate(customers: int) -> None:
    plans_ensure()
    sql("SELECT setseed(0.42)")
    timed(
        f"{customers:,} customers",
        lambda: sql(
            "INSERT INTO customers (email, name) SELECT 'c' || g || '@bench.test', 'Customer ' || g "
            "FROM generate_series(1, %s) g",
            [customers],
        ),
    )
    # Plans in the demo's proportions: 50 % Free, 25 % Starter, 15 % Growth, 10 % Pro.
    timed(
        "subscriptions",
        lambda: sql(
            """
            INSERT INTO subscriptions (id, customer_id, plan_id, status, processor, current_period_start,
                                       current_period_end, created_at, updated_at)
            SELECT gen_random_uuid(), c.id, p.id, 'active', 'manual', c.current_period_start,
                   c.current_period_end, now(), now()
            FROM (SELECT id, current_period_start, current_period_end,
                         CASE WHEN r < 0.5 THEN 'free' WHEN r < 0.75 THEN 'starter'
                              WHEN r < 0.9 THEN 'growth' ELSE 'pro' END AS code
                  FROM (SELECT *, random() AS r FROM customers) x) c
            JOIN plans p ON p.code = c.code
            """
        ),
    )

    def periods():
        # The periods-disjoint exclusion constraint checks each row against a GiST index as it goes
        # (about 100 us a row); rebuilt after the load it costs a fraction of that.
        (exclusion,) = sql(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = 'usage_tracking_periods_disjoint'"
        )[0]
        sql("ALTER TABLE usage_tracking DROP CONSTRAINT usage_tracking_periods_disjoint")
        with transaction.atomic():
            sql("SELECT set_config('billing_ops.recount', 'on', true)")
            # Usage around the allowance (unlimited as if 2,000): about 3 % of periods over it.
            sql(
                """
                INSERT INTO usage_tracking (customer_id, period_start, period_end, month,
                                            active_projects_count, ai_interactions_count, minutes_used, updated_at)
                SELECT s.customer_id, m.start, m.start + interval '1 month', to_char(m.start, 'YYYY-MM'),
                       CASE WHEN m.k = 0 THEN floor(random() * (coalesce(p.max_active_projects, 20) + 1.1)) ELSE 0 END,
                       floor(random() * coalesce(p.ai_interactions_per_period, 2000) * 1.03),
                       round((random() * coalesce(p.minutes_per_period, 2000) * 1.03)::numeric, 1),
                       now()
                FROM subscriptions s JOIN plans p ON p.id = s.plan_id
                CROSS JOIN LATERAL (SELECT k, date_trunc('month', now(), 'UTC') - k * interval '1 month' AS start
                                    FROM generate_series(0, %s) k) m
                ORDER BY m.k DESC  -- month by month, as the product writes them
                """,
                [MONTHS - 1],
            )
        sql(f"ALTER TABLE usage_tracking ADD CONSTRAINT usage_tracking_periods_disjoint {exclusion}")

    timed(f"{MONTHS} usage periods per customer", periods)

    def ledger():
        # Credit for every 20th customer: purchased minutes, goodwill AI interactions; some expired.
        sql(
            """
            INSERT INTO credit_grants (id, customer_id, metric, granted, remaining, source, expires_at,
                                       created_by, reason, created_at)
            SELECT gen_random_uuid(), c.id, CASE WHEN c.n %% 2 = 0 THEN 'minutes' ELSE 'ai_interaction' END,
                   100, 100, CASE WHEN c.n %% 3 = 0 THEN 'goodwill' ELSE 'purchase' END,
                   CASE WHEN c.n %% 7 = 0 THEN now() - (c.n %% 300) * interval '1 day' END, 'bench/finance.py',
                   'bench', now() - (c.n %% 360) * interval '1 day'
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM customers) c WHERE c.n %% 20 = 0
            """
        )
        # Usage draws (with an event id) on most grants, a refund (kind refund, no event) on some.
        sql(
            """
            INSERT INTO credit_draws (grant_id, customer_id, usage_event_id, kind, quantity, drawn_at)
            SELECT g.id, g.customer_id, CASE WHEN x.k < 3 THEN gen_random_uuid() END,
                   CASE WHEN x.k < 3 THEN 'usage' ELSE 'refund' END,
                   CASE WHEN x.k < 3 THEN 10 + x.k ELSE 20 END,
                   least(g.created_at + (x.k + 1) * interval '5 days', now())
            FROM credit_grants g
            CROSS JOIN LATERAL (SELECT k FROM generate_series(0, 3) k
                                WHERE k < 3 OR abs(hashtext(g.id::text)) %% 10 = 0) x
            """
        )

    timed("credit ledger", ledger)
    timed(
        "run history",
        lambda: sql(
            """
            INSERT INTO reconciliation_runs (started_at, finished_at, started_by, mode, status, scope,
                customers_checked, customers_with_drift, discrepancies, fixed, summary, error)
            SELECT now() - d * interval '1 day', now() - d * interval '1 day', 'cron',
                   CASE WHEN d %% 7 = 0 THEN 'apply' ELSE 'report' END, 'completed', 'all customers',
                   %s, d %% 13, d %% 17, CASE WHEN d %% 7 = 0 THEN d %% 17 ELSE 0 END, '{}', ''
            FROM generate_series(0, 83) d
            """,
            [customers],
        ),
    )
    timed("VACUUM ANALYZE", lambda: sql("VACUUM ANALYZE"))


def fetch(client: Client, url: str) -> int:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return (
        sum(len(chunk) for chunk in response.streaming_content)
        if response.streaming
        else len(response.content)
    )


def measure(client: Client, url: str) -> dict:
    """Best of three for the time; the query count; then one more run under tracemalloc (which slows
    Python down several times) for the peak memory."""
    times, queries = [], []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    for _ in range(3):
        queries.clear()
        start = time.perf_counter()
        with connection.execute_wrapper(count):  # the request's own queries (CaptureQueriesContext
            size = fetch(client, url)  # loses them: request_started resets the log)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fetch(client, url)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"url": url, "seconds": min(times), "queries": len(queries), "bytes": size, "peak": peak}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 1M customers")
    args = parser.parse_args()
    customers = max(100, int(1_000_000 * args.scale))

    fresh_bench_schema()
    started = time.perf_counter()
    generate(customers)
    generation = time.perf_counter() - started

    from django.contrib.auth import get_user_model

    boss = get_user_model().objects.create_superuser("bench", "bench@bench.test", None)
    client = Client()
    client.force_login(boss)
    last = last_full_month()
    this = month_shift(last, 1)
    urls = [
        f"/admin/finance/usage/?month={last}",
        f"/admin/finance/usage/?month={last}&plan=starter",
        "/admin/finance/over-limit/",
        f"/admin/finance/credit/?month={this}",
        f"/admin/finance/trends/?month={this}",
        f"/admin/usage/usagetracking/?month={last}&plan=starter",
        f"/admin/finance/usage.csv?month={last}",
        "/admin/finance/over-limit.csv",
        f"/admin/finance/credit.csv?month={this}",
    ]
    for url in urls[:2]:
        client.get(url)  # warm: the first request pays for imports and template compilation
    results = []
    for url in urls:
        log(f"GET {url} ...")
        results.append(measure(client, url))

    print(
        f"\nFinance pages at {customers:,} customers, {customers * MONTHS:,} usage periods "
        f"(`bench/finance.py --scale {args.scale:g}`); data generated in {generation:.0f} s.\n"
    )
    print("| page | time (best of 3) | queries | response | peak Python memory |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| `{r['url']}` | {r['seconds'] * 1000:,.0f} ms | {r['queries']} | {r['bytes'] / 1024:,.0f} KiB "
            f"| {r['peak'] / 1024 / 1024:,.1f} MiB |"
        )


if __name__ == "__main__":
    main()
