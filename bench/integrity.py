"""Discrepancy report and reconciliation at scale, as ratios from one run (SPEC §11).

Generates 1M customers, 5M projects and 20M usage events at --scale 1 (bench/dataset.py: set-based,
triggers off in its session, then counters built from the truth; no drift of its own), plants drift in
10 % of the customers, and prints:

- the report's time as a ratio of a bare aggregate scan of the same tables (target <= 2x);
- the report process's peak memory for the whole database vs for one customer (target: flat);
- reconciliation of the drifted customers as a ratio of the report (target <= 3x);
- the same report done as a per-customer loop on a 10,000-customer sample, scaled up, for comparison.

    .venv/bin/python bench/integrity.py --scale 0.1     # 100k customers, about two minutes
    .venv/bin/python bench/integrity.py                 # full size; generation takes a while

Runs in its own database (billing_ops_bench, rebuilt); progress on stderr, the table on stdout.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, fresh_bench_schema, log, sql, timed  # sets up Django on the benchmark database
from dataset import generate
from django.db import connection, transaction

from billing.ops.checks import drift_scan
from billing.ops.integrity import discrepancy_report, usage_reconcile


def plant_drift(fraction: float) -> int:
    """Drift in every 1/fraction-th customer: a wrong gauge, a wrong metered total, a lost preset use."""
    step = round(1 / fraction)
    with transaction.atomic():
        sql(
            "INSERT INTO usage_counter_write_grants VALUES (pg_current_xact_id()::text::bigint) ON CONFLICT DO NOTHING"
        )
        sql(
            "CREATE TEMP TABLE drifted ON COMMIT DROP AS "
            "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM customers) x WHERE n %% %s = 0",
            [step],
        )
        sql(
            "UPDATE usage_tracking t SET active_projects_count = active_projects_count + 1 FROM drifted d "
            "WHERE t.customer_id = d.id AND t.period_start <= now() AND t.period_end > now()"
        )
        sql(
            "UPDATE usage_tracking t SET minutes_used = minutes_used + 5 FROM drifted d "
            "WHERE t.customer_id = d.id AND t.period_start < date_trunc('month', now())"
        )
        sql("UPDATE presets p SET usage_count = usage_count - 1 FROM drifted d WHERE p.customer_id = d.id")
        count = sql("SELECT count(*) FROM drifted")[0][0]
    sql("VACUUM ANALYZE")
    return count


BARE_SCAN = [
    # The same tables and aggregates as the report, with nothing compared: the floor any report pays.
    "SELECT count(*) FROM customers",
    "SELECT count(*) FROM (SELECT customer_id, count(*) FROM projects WHERE status = 'active' GROUP BY 1) x",
    "SELECT count(*) FROM usage_tracking",
    "SELECT count(*) FROM (SELECT customer_id, metric, date_trunc('month', occurred_at), sum(quantity) "
    "FROM usage_events GROUP BY 1, 2, 3) x",
    "SELECT count(*) FROM presets",
    "SELECT count(*) FROM (SELECT preset_id, count(*), max(used_at) FROM preset_usage GROUP BY 1) x",
]


def bare_scan():
    for statement in BARE_SCAN:
        sql(statement)


def report_rows():
    counted = {}

    def emit(scan, findings):
        counted["rows"] = sum(1 for _ in scan.rows())

    discrepancy_report(started_by="bench/integrity.py", emit=emit)
    return counted["rows"]


def report_peak_rss_mb(customer=None, root=ROOT) -> float:
    """Peak resident memory of a `manage.py usage_discrepancies --format json` process, in MB."""
    return report_command(customer, root)[1]


def report_command(customer=None, root=ROOT) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of `manage.py usage_discrepancies --format json`, the report as
    an operator runs it (recorded, every finding written out), from the checkout ``root`` (another
    checkout compares its code on this same database: EMBEDDED_PGDATA points it here).

    Memory is measured through a wrapper process of its own: RUSAGE_CHILDREN reports the largest child.
    """
    import os

    args = [str(root / "manage.py"), "usage_discrepancies", "--format", "json"]
    if customer:
        args += ["--customer", customer]
    wrapper = (
        "import resource, subprocess, sys, time; start = time.perf_counter(); "
        "subprocess.run([sys.executable, *sys.argv[1:]], stdout=subprocess.DEVNULL, check=True); "
        "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env = dict(
        os.environ,
        EMBEDDED_DBNAME=connection.settings_dict["NAME"],
        EMBEDDED_PGDATA=str(connection.settings_dict["PGDATA"]),
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *args], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    seconds, kb = out.stdout.split()
    return float(seconds), int(kb) / 1024  # kB on Linux


def per_customer_loop(sample: int) -> float:
    ids = [r[0] for r in sql("SELECT id FROM customers ORDER BY random() LIMIT %s", [sample])]
    start = time.perf_counter()
    for customer_id in ids:
        with transaction.atomic():
            drift_scan([customer_id])
    return time.perf_counter() - start


def report_on_kept_dataset(compare=None, reconcile=False, batch_size=1000):
    """The report against the bare scan on a kept dataset (EMBEDDED_DBNAME=billing_ops_bench_1m); with
    ``compare`` (another checkout, e.g. a worktree of main) its report too, in the same run; with
    ``reconcile``, drift planted in 10 % of the customers, then the report and the reconciliation."""
    import os

    migrate_kept()
    sizes = {t: sql(f"SELECT reltuples::bigint FROM pg_class WHERE relname = '{t}'")[0][0] for t in SIZED}
    if sizes["customers"] < 1:
        sys.exit("no kept dataset here: run bench/admin.py --reuse (or this without --reuse) first")
    loads = [os.getloadavg()[0]]
    bare, _ = timed("bare aggregate scan", bare_scan)
    bare2, _ = timed("bare aggregate scan (again, warm)", bare_scan)
    bare = min(bare, bare2)
    one = sql("SELECT email FROM customers LIMIT 1")[0][0]
    checkouts = [("this checkout", ROOT)] + (
        [("compared: " + str(compare), Path(compare))] if compare else []
    )
    results = {}
    for name, root in checkouts:  # this checkout first: the compared one reads a warmer cache
        seconds, rss_all = timed(f"report, {name}", lambda root=root: report_command(root=root))[1]
        _, rss_one = report_command(one, root)
        results[name] = (seconds, rss_all, rss_one)
        loads.append(os.getloadavg()[0])
    report, (rows, found) = timed(
        "discrepancy report (in process, rows and findings counted)", report_rows_and_findings
    )
    loads.append(os.getloadavg()[0])
    print(
        f"Discrepancy report on the kept dataset ({', '.join(f'{n:,} {t}' for t, n in sizes.items())}; "
        f"planner estimates; {rows:,} drifted counters, {found:,} findings). PostgreSQL "
        f"{sql('SHOW server_version')[0][0]}, one run, load average {min(loads):.1f}-{max(loads):.1f} "
        "(`EMBEDDED_DBNAME=billing_ops_bench_1m nice -n 10 .venv/bin/python bench/integrity.py --reuse"
        + (" --compare CHECKOUT" if compare else "")
        + (" --reconcile" if reconcile else "")
        + "`).\n"
    )
    print("| measure | " + " | ".join(name for name, _ in checkouts) + " | target |")
    print("|---|" + "---:|" * len(checkouts) + "---:|")
    print(f"| bare aggregate scan of the same tables | {bare:.1f} s |" + " |" * (len(checkouts) - 1) + " |")
    print(
        "| report (`manage.py usage_discrepancies --format json`, whole database) | "
        + " | ".join(
            f"{results[n][0]:.1f} s = **{results[n][0] / bare:.2f}x** the scan" for n, _ in checkouts
        )
        + " | <= 2x |"
    )
    print(
        "| its peak memory, whole database | "
        + " | ".join(f"{results[n][1]:.0f} MB" for n, _ in checkouts)
        + " | flat |"
    )
    print(
        "| its peak memory, one customer | "
        + " | ".join(f"{results[n][2]:.0f} MB" for n, _ in checkouts)
        + " | |"
    )
    print(
        f"| report in process (discrepancy_report, rows and findings read) | {report:.1f} s = "
        f"{report / bare:.2f}x |" + " |" * (len(checkouts) - 1) + " |"
    )
    if reconcile:
        reconcile_on_kept_dataset(batch_size)


def reconcile_on_kept_dataset(batch_size):
    """Drift planted in 10 % of the kept dataset's customers, the report, then the reconciliation
    that sets it right (the dataset is left as it was: no drift planted remains)."""
    import os

    drifted = plant_drift(0.1)
    log(f"planted drift in {drifted:,} customers")
    load = os.getloadavg()[0]
    report, rows = timed("discrepancy report", report_rows)
    reconcile, result = timed(
        f"reconciliation of {drifted:,} drifted customers (--batch-size {batch_size})",
        lambda: usage_reconcile(apply=True, started_by="bench/integrity.py", batch_size=batch_size),
    )
    print(
        f"\nReconciliation on the kept dataset, drift planted in {drifted:,} customers (load average "
        f"{load:.1f}-{os.getloadavg()[0]:.1f}):\n"
    )
    print("| measure | value | target |")
    print("|---|---:|---:|")
    print(f"| discrepancy report ({rows:,} drifted counters) | {report:.1f} s | |")
    print(
        f"| reconciliation of the {drifted:,} drifted customers ({result.summary['fixed']:,} counters set, "
        f"--batch-size {batch_size}) | {reconcile:.1f} s = **{reconcile / report:.2f}x** the report | <= 3x |"
    )
    print(f"| drift left after reconciliation | {result.summary['remaining_drift']} | 0 |")


SIZED = ("customers", "projects", "usage_events", "usage_tracking", "presets", "preset_usage")


def migrate_kept():
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def report_rows_and_findings():
    counted = {}

    def emit(scan, findings):
        counted["rows"] = sum(1 for _ in scan.rows())
        counted["findings"] = sum(1 for _ in findings)

    discrepancy_report(started_by="bench/integrity.py", emit=emit)
    return counted["rows"], counted["findings"]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of 1M customers / 5M projects / 20M events"
    )
    parser.add_argument(
        "--sample", type=int, default=10_000, help="customers in the per-customer loop sample"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the report on the database's kept dataset (bench/admin.py --reuse's): no generation, "
        "no planted drift, no reconciliation or per-customer loop (they would change or outlast it)",
    )
    parser.add_argument(
        "--compare",
        metavar="CHECKOUT",
        help="with --reuse: also time another checkout's report on the same database in the same run "
        "(e.g. `git worktree add /tmp/main-wt main` with its .venv linked)",
    )
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="with --reuse: then plant drift in 10%% of the customers and time the report and the "
        "reconciliation that sets it right",
    )
    args = parser.parse_args()

    if args.reuse:
        return report_on_kept_dataset(args.compare, args.reconcile, args.batch_size)
    customers = max(100, int(1_000_000 * args.scale))
    fresh_bench_schema()
    gen_time, _ = timed(
        f"generating {customers:,} customers, {5 * customers:,} projects, {20 * customers:,} events",
        lambda: generate(customers, projects_per=5, events_per=20, drift_every=0),
    )
    drifted = plant_drift(0.1)
    log(f"planted drift in {drifted:,} customers")
    server = sql("SHOW server_version")[0][0]

    bare, _ = timed("bare aggregate scan", bare_scan)
    bare2, _ = timed("bare aggregate scan (again, warm)", bare_scan)
    bare = min(bare, bare2)
    report, rows = timed("discrepancy report", report_rows)
    report2, _ = timed("discrepancy report (again, warm)", report_rows)
    report = min(report, report2)
    rss_all = report_peak_rss_mb()
    one = sql("SELECT email FROM customers LIMIT 1")[0][0]
    rss_one = report_peak_rss_mb(one)
    sample = min(args.sample, customers)
    loop, _ = timed(f"per-customer loop over {sample:,} customers", lambda: per_customer_loop(sample))
    loop_scaled = loop * customers / sample
    reconcile, result = timed(
        f"reconciliation of {drifted:,} drifted customers (--batch-size {args.batch_size})",
        lambda: usage_reconcile(apply=True, started_by="bench/integrity.py", batch_size=args.batch_size),
    )
    remaining = result.summary["remaining_drift"]

    print(
        f"Integrity tools at {customers:,} customers, {5 * customers:,} projects, {20 * customers:,} usage events; "
        f"drift planted in {drifted:,} customers. PostgreSQL {server}, one run "
        f"(`bench/integrity.py --scale {args.scale:g}`); data generated in {gen_time:.0f} s.\n"
    )
    print("| measure | value | target |")
    print("|---|---:|---:|")
    print(f"| bare aggregate scan of the same tables | {bare:.1f} s | |")
    print(
        f"| discrepancy report ({rows:,} drifted counters found) | {report:.1f} s = **{report / bare:.2f}x** the scan | <= 2x |"
    )
    print(f"| report process peak memory, whole database | {rss_all:.0f} MB | flat |")
    print(f"| report process peak memory, one customer | {rss_one:.0f} MB | |")
    print(
        f"| reconciliation of the {drifted:,} drifted customers ({result.summary['fixed']:,} counters set) | "
        f"{reconcile:.1f} s = **{reconcile / report:.2f}x** the report | <= 3x |"
    )
    print(f"| drift left after reconciliation | {remaining} | 0 |")
    print(
        f"| per-customer loop, {sample:,}-customer sample, scaled to {customers:,} | {loop_scaled:.0f} s = "
        f"{loop_scaled / report:.0f}x the report | (for comparison) |"
    )


if __name__ == "__main__":
    main()
