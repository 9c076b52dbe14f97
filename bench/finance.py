"""Finance's pages at scale (SPEC §11): each page's time and query count at 1M customers.

Generates --scale x 1M customers with bench/dataset.py (the benchmarks' one generator): the four plans,
twelve monthly usage periods each (usage_tracking, the counters the pages read, built from 20 usage
events per customer), purchased and goodwill credit for 5 % of them with draws, refunds and expiries
in the ledger, and twelve weeks of run history. Then a
superuser's test client opens each finance page (and streams each export) and the table says how long
each took, how many queries it ran, and the export's peak Python memory.

    .venv/bin/python bench/finance.py --scale 0.01    # 10k customers, seconds
    .venv/bin/python bench/finance.py                 # 1M customers, 12M usage periods

Runs in its own database (billing_ops_bench, rebuilt); progress on stderr, the table on stdout. With
--reuse a database that already holds this dataset is kept (generate once, measure again):

    EMBEDDED_DBNAME=billing_ops_bench_fin nice -n 10 .venv/bin/python bench/finance.py --reuse
"""

import argparse
import os
import time
import tracemalloc

os.environ.setdefault("ALLOWED_HOSTS", "testserver")  # the test client's host

from dataclasses import asdict

from common import log  # sets up Django on the benchmark database
from dataset import Params, generate, prepare
from django.db import connection
from django.test import Client

from billing.finance.selectors import last_full_month, month_shift

MONTHS = 12


def fetch(client: Client, url: str) -> int:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return (
        sum(len(chunk) for chunk in response.streaming_content)
        if response.streaming
        else len(response.content)
    )


def measure(client: Client, url: str, runs: int = 3) -> dict:
    """Best of ``runs`` for the time; the query count; then one more run under tracemalloc (which slows
    Python down several times) for the peak memory."""
    times, queries = [], []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    for _ in range(runs):
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


# The floor of a month summed live: its periods' counters read and added up, nothing else.
BARE_MONTH = (
    "SELECT count(*), sum(ai_interactions_count), sum(minutes_used) FROM usage_tracking WHERE month = %s"
)


def month_layout(month: str, runs: int) -> dict:
    """How the month's periods lie in the table and are read: pg_stats' correlation of month (1 = a
    month's rows stored together, as a live database stores them), the month page's statement's scan
    of usage_tracking (EXPLAIN), and the bare scan of the month (best of ``runs``)."""
    from billing.ops.usage_report import _ALLOWANCES, _STAMPED
    from usage.names import render

    with connection.cursor() as cursor:
        cursor.execute(
            render(
                "SELECT correlation FROM pg_stats WHERE tablename = 'usage_tracking' AND attname = 'month'"
            )
        )
        correlation = (cursor.fetchone() or [None])[0]
        cursor.execute(render(_ALLOWANCES))
        plans = cursor.fetchall()
        arrays = {"ids": [p[0] for p in plans], "ai": [p[2] for p in plans], "minutes": [p[3] for p in plans]}
        cursor.execute("EXPLAIN " + render(_STAMPED), {**arrays, "months": [month], "plan": None})
        scan = next(
            (line.strip().split("  (")[0] for (line,) in cursor.fetchall() if "usage_tracking" in line), "?"
        )
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            cursor.execute(render(BARE_MONTH), [month])
            cursor.fetchall()
            times.append(time.perf_counter() - start)
    return {"correlation": correlation, "scan": scan, "bare": min(times)}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 1M customers")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the database's dataset if it was generated at this scale"
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per page (the best is shown)")
    parser.add_argument("--only", default="", help="measure only the pages whose URL contains this")
    args = parser.parse_args()
    customers = max(100, int(1_000_000 * args.scale))

    params = Params(customers, periods=MONTHS)
    generation = 0.0
    if not prepare(params, reuse=args.reuse):
        generation = generate(**asdict(params)).seconds

    from django.contrib.auth import get_user_model

    boss = get_user_model().objects.filter(
        username="bench"
    ).first() or get_user_model().objects.create_superuser("bench", "bench@bench.test", None)
    client = Client()
    client.force_login(boss)
    last = last_full_month()
    this = month_shift(last, 1)
    urls = [
        f"/admin/finance/usage/?month={last}",
        f"/admin/finance/usage/?month={last}&plan=starter",
        f"/admin/finance/usage/?month={month_shift(last, -1)}",  # closed, once summarized by cron
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
        if args.only not in url:
            continue
        log(f"GET {url} ...")
        results.append(measure(client, url, args.runs))

    print(
        f"\nFinance pages at {customers:,} customers, {customers * MONTHS:,} usage periods "
        f"(`bench/finance.py --scale {args.scale:g}`); "
        + (
            f"data generated in {generation:.0f} s.\n"
            if generation
            else "dataset kept from an earlier run.\n"
        )
    )
    print(f"| page | time (best of {args.runs}) | queries | response | peak Python memory |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| `{r['url']}` | {r['seconds'] * 1000:,.0f} ms | {r['queries']} | {r['bytes'] / 1024:,.0f} KiB "
            f"| {r['peak'] / 1024 / 1024:,.1f} MiB |"
        )
    layout = month_layout(last, args.runs)
    print(
        f"\nThe bare scan of {last} (`{BARE_MONTH % repr(last)}`), best of {args.runs}: "
        f"{layout['bare'] * 1000:,.0f} ms. The month page's statement reads usage_tracking by "
        f"`{layout['scan']}`; pg_stats correlation of month: {layout['correlation']}."
    )


if __name__ == "__main__":
    main()
