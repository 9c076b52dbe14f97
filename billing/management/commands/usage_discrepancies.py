import sys

from billing.management.base import EXIT_PROBLEM, OpsCommand, resolve_or_exit
from billing.management.output import write_report
from billing.ops.integrity import discrepancy_report
from usage.selectors import customer_resolve
from usage.services.drift import scan_summary


class Command(OpsCommand):
    help = (
        "Compare every usage counter with its source rows (I1-I3) and list the findings (over limit, stale "
        "periods, trigger health). Set-based, streams its rows; records the run. Suitable for cron: "
        "--fail-on-drift exits 1 when a counter drifted or a trigger is unhealthy."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
        parser.add_argument(
            "--customer", action="append", metavar="EMAIL|ID", help="Only this customer (repeatable)."
        )
        parser.add_argument("--fail-on-drift", action="store_true", help="Exit 1 when anything drifted.")

    def handle(self, *args, format, customer, fail_on_drift, **options):
        customers = [resolve_or_exit(customer_resolve, ref) for ref in customer or []]

        def emit(scan, findings):  # both streamed: a million customers' report never sits in memory
            write_report(self.stdout, format, scan_summary(scan), scan.rows(), findings)

        result = discrepancy_report(
            customer_ids=[c.pk for c in customers] if customers else None,
            started_by="manage.py usage_discrepancies",
            scope=", ".join(c.email for c in customers) if customers else "all customers",
            emit=emit,
        )
        unhealthy = result.summary["findings"]["trigger_health"]
        if fail_on_drift and (result.summary["discrepancies"] or unhealthy):
            sys.exit(EXIT_PROBLEM)
