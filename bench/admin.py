"""Admin page times and query counts at scale (SPEC §7 "Fast at a million", §11; issue 11).

Generates the benchmarks' dataset (bench/dataset.py: 1M customers / 5M projects / 20M usage events at
--scale 1, three periods, subscriptions, credit, webhooks, audit, drift in 1 in 1,000), runs one report
over everyone (the dashboard reads it), then loads every admin page support uses through Django's test
client as a logged-in superuser: the median of 3 loads of each, and its query count. Targets: under a
second, at most 20 queries.

    .venv/bin/python bench/admin.py --scale 0.1     # 100k customers
    nice -n 10 .venv/bin/python bench/admin.py      # 1M customers

With --reuse the dataset is generated once and kept: a later run at the same --scale only migrates it
(new indexes are built on the kept data) and measures. Keep it in a database of its own:

    EMBEDDED_DBNAME=billing_ops_bench_1m nice -n 10 .venv/bin/python bench/admin.py --reuse
"""

import argparse
import statistics
import time
from dataclasses import asdict

from common import log  # sets up Django on the benchmark database
from dataset import Params, generate, prepare
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.ops.integrity import discrepancy_report


def sql(statement, params=None):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def timed(label, fn):
    log(f"{label} ...")
    start = time.perf_counter()
    result = fn()
    log(f"  {time.perf_counter() - start:.1f} s")
    return result


def pages():
    one = sql(
        "SELECT id, email FROM customers ORDER BY email LIMIT 1 OFFSET (SELECT count(*) / 2 FROM customers)"
    )[0]
    run = sql("SELECT max(id) FROM reconciliation_runs")[0][0]
    customers = reverse("admin:usage_customer_changelist")
    return {
        "dashboard": reverse("admin:index"),
        "customer list": customers,
        "customer list, page 100": customers + "?p=100",
        "customer list, search by email": customers + f"?q={one[1]}",
        "customer list, Growth with more than 3 projects": customers + "?plan=growth&projects=gt3",
        "customer list, over a limit": customers + "?over=yes",
        "customer list, drift at the last report": customers + "?drift=last",
        "customer page": reverse("admin:usage_customer_change", args=[one[0]]),
        "plan change validation": reverse("admin:usage_customer_plan", args=[one[0]]) + "?to=starter",
        "reconciliation runs": reverse("admin:usage_reconciliationrun_changelist"),
        "run page": reverse("admin:usage_reconciliationrun_change", args=[run]),
        "usage periods": reverse("admin:usage_usagetracking_changelist"),
        "usage events": reverse("admin:usage_usageevent_changelist"),
        "projects": reverse("admin:usage_project_changelist"),
        "subscriptions": reverse("admin:billing_subscription_changelist"),
        "webhook events": reverse("admin:billing_webhookevent_changelist"),
        "audit log": reverse("admin:billing_auditlog_changelist"),
    }


def measure(client, url):
    times, queries = [], 0
    for _ in range(3):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
        # Transaction control (BEGIN, COMMIT) is not a query: the test suite's count leaves it out too.
        queries = sum(
            1
            for q in captured
            if q["sql"].split()[0].upper() not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")
        )
    return statistics.median(times), queries


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 1M customers, 5M projects, 20M events")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the database's dataset if it was generated at this scale"
    )
    args = parser.parse_args()
    customers = max(100, int(1_000_000 * args.scale))

    params = Params(customers)
    if not prepare(params, reuse=args.reuse):
        generate(**asdict(params))
        timed("one report over every customer", lambda: discrepancy_report(started_by="bench"))

    from django.contrib.auth import get_user_model
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's host "testserver" is allowed
    user = get_user_model().objects.filter(
        username="bench"
    ).first() or get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)
    client.get(reverse("admin:index"))  # warm: content types, templates

    rows = [(name, *measure(client, url)) for name, url in pages().items()]
    print(f"\nAdmin pages at {customers:,} customers (median of 3 loads, test client, superuser)\n")
    print("| page | time | queries |\n|---|---:|---:|")
    for name, seconds, queries in rows:
        print(f"| {name} | {seconds * 1000:,.0f} ms | {queries} |")
    slow = [name for name, seconds, _ in rows if seconds >= 1]
    many = [name for name, _, queries in rows if queries > 20]
    print(f"\nover a second: {slow or 'none'}; over 20 queries: {many or 'none'}")


if __name__ == "__main__":
    main()
