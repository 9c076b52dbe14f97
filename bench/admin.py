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

bench/finance.py's dataset (twelve periods per customer) serves too: pass --periods 12.
"""

import argparse
import statistics
import time
from dataclasses import asdict

from common import log, sql, timed  # sets up Django on the benchmark database
from dataset import Params, generate, prepare
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.ops.integrity import discrepancy_report


def pages():
    one = sql(
        "SELECT id, email FROM customers ORDER BY email LIMIT 1 OFFSET (SELECT count(*) / 2 FROM customers)"
    )[0]
    customer_id, email = str(one[0]), one[1]
    prefix = email.split("@")[0][:-2]  # "ops.5012" of "ops.501234@…": a prefix shared by about 100 customers
    run = sql("SELECT max(id) FROM reconciliation_runs")[0][0]
    event_id = sql("SELECT event_id FROM webhook_events ORDER BY id DESC LIMIT 1")[0][0]
    sub = sql(
        "SELECT external_subscription_id FROM subscriptions WHERE external_subscription_id IS NOT NULL LIMIT 1"
    )
    key = sql("SELECT idempotency_key FROM usage_events WHERE idempotency_key IS NOT NULL LIMIT 1")[0][0]
    month = time.strftime("%Y-%m", time.gmtime())
    pro = sql("SELECT id FROM plans WHERE code = 'pro'")[0][0]
    customers = reverse("admin:usage_customer_changelist")

    def admin_list(model):
        return reverse(f"admin:{model}_changelist")

    return {
        "dashboard": reverse("admin:index"),
        "customer list": customers,
        "customer list, page 100": customers + "?p=100",
        "customer list, search by email": customers + f"?q={email}",
        "customer list, search by email prefix": customers + f"?q={prefix}",
        "customer list, search by customer id": customers + f"?q={customer_id}",
        "customer list, Growth with more than 3 projects": customers + "?plan=growth&projects=gt3",
        "customer list, Paddle, past due": customers + "?processor=paddle&status=past_due",
        "customer list, over a limit": customers + "?over=yes",
        "customer list, drift at the last report": customers + "?drift=last",
        "customer list, period ended without a rollover": customers + "?stale=yes",
        "customer list, sorted by name": customers + "?o=2",
        "customer page": reverse("admin:usage_customer_change", args=[customer_id]),
        "plan change validation": reverse("admin:usage_customer_plan", args=[customer_id]) + "?to=starter",
        "grant credit page": reverse("admin:usage_customer_grant", args=[customer_id]),
        "reconciliation runs": admin_list("usage_reconciliationrun"),
        "run page": reverse("admin:usage_reconciliationrun_change", args=[run]),
        "run rows": admin_list("usage_reconciliationrow"),
        "usage periods": admin_list("usage_usagetracking"),
        "usage periods, this month": admin_list("usage_usagetracking") + f"?month={month}",
        "usage periods, search by email": admin_list("usage_usagetracking") + f"?q={email}",
        "usage events": admin_list("usage_usageevent"),
        "usage events, this month, minutes": admin_list("usage_usageevent")
        + f"?month={month}&metric=minutes",
        "usage events, search by email": admin_list("usage_usageevent") + f"?q={email}",
        "usage events, search by idempotency key": admin_list("usage_usageevent") + f"?q={key}",
        "projects": admin_list("usage_project"),
        "projects, archived": admin_list("usage_project") + "?status=archived",
        "projects, search by email": admin_list("usage_project") + f"?q={email}",
        "projects, search by part of a name (common)": admin_list("usage_project") + "?q=Project+12",
        "projects, search by part of a name (nobody's)": admin_list("usage_project") + "?q=Garden",
        "presets": admin_list("usage_preset"),
        "presets, search by part of a name": admin_list("usage_preset") + "?q=lectur",
        "preset uses": admin_list("usage_presetusage"),
        "subscriptions": admin_list("billing_subscription"),
        "subscriptions, Pro, past due": admin_list("billing_subscription")
        + f"?plan__id__exact={pro}&status__exact=past_due",
        "subscriptions, search by email": admin_list("billing_subscription") + f"?q={email}",
        "subscriptions, search by processor id": admin_list("billing_subscription")
        + f"?q={sub[0][0] if sub else 'x'}",
        "credit grants": admin_list("billing_creditgrant"),
        "credit grants, search by email": admin_list("billing_creditgrant") + f"?q={email}",
        "webhook events": admin_list("billing_webhookevent"),
        "webhook events, failed": admin_list("billing_webhookevent") + "?status__exact=failed",
        "webhook events, search by event id": admin_list("billing_webhookevent") + f"?q={event_id}",
        "audit log": admin_list("billing_auditlog"),
        "audit log, plan changes": admin_list("billing_auditlog") + "?action__exact=plan_change",
        "audit log, search by customer id": admin_list("billing_auditlog") + f"?q={customer_id}",
    }


def measure(client, url):
    times, queries = [], 0
    for _ in range(3):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - start)
        if response.status_code != 200:
            return None, response.status_code
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
    parser.add_argument(
        "--periods",
        type=int,
        default=Params.periods,
        help="usage periods per customer (a kept dataset is reused only with the same number: "
        "bench/finance.py generates 12)",
    )
    args = parser.parse_args()
    customers = max(100, int(1_000_000 * args.scale))

    params = Params(customers, periods=args.periods)
    if not prepare(params, reuse=args.reuse):
        generate(**asdict(params))
    # One report over everyone, whose run the dashboard and the drift and over-limit filters read (again
    # if a kept database's last one predates the run findings).
    if not sql(
        "SELECT 1 FROM reconciliation_runs r WHERE started_by = 'bench' AND status = 'completed' "
        "AND EXISTS (SELECT 1 FROM reconciliation_run_findings f WHERE f.run_id = r.id)"
    ):
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

    rows = []
    for name, url in pages().items():
        log(f"GET {url}")
        rows.append((name, *measure(client, url)))
    failed = [(name, status) for name, seconds, status in rows if seconds is None]
    rows = [row for row in rows if row[1] is not None]
    print(f"\nAdmin pages at {customers:,} customers (median of 3 loads, test client, superuser)\n")
    print("| page | time | queries |\n|---|---:|---:|")
    for name, seconds, queries in rows:
        print(f"| {name} | {seconds * 1000:,.0f} ms | {queries} |")
    slow = [name for name, seconds, _ in rows if seconds >= 1]
    many = [name for name, _, queries in rows if queries > 20]
    print(f"\nover a second: {slow or 'none'}; over 20 queries: {many or 'none'}")
    if failed:
        print(f"not 200: {failed}")


if __name__ == "__main__":
    main()
