import sys

from django.core.management.base import CommandError
from django.db.models.functions import Abs

from billing.management.base import (
    EXIT_PROBLEM,
    EXIT_USAGE,
    OpsCommand,
    positive_int,
    progress_bar,
    resolve_or_exit,
    text_label,
)
from billing.management.output import write_report
from billing.ops.integrity import ReconciliationBusy, usage_reconcile
from usage.models import ReconciliationRun
from usage.selectors import customer_resolve
from usage.services.drift import scan_summary


class Command(OpsCommand):
    help = (
        "Set drifted usage counters to the truth recomputed from their source rows, and nothing else. "
        "Dry run by default (shows the exact changes); --apply writes, batch by batch under row locks, safe "
        "while the product writes. One run at a time; a killed run is resumed by the next. Suitable for cron."
    )

    def add_arguments(self, parser):
        parser.add_argument("--apply", action="store_true", help="Write the fixes (default: dry run).")
        parser.add_argument(
            "--customer", action="append", metavar="EMAIL|ID", help="Only this customer (repeatable)."
        )
        parser.add_argument(
            "--batch-size", type=positive_int(1), default=1000, help="Customers per locked batch."
        )
        parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
        parser.add_argument(
            "--started-by",
            type=text_label(ReconciliationRun._meta.get_field("started_by").max_length),
            default="",
            help="Who started it, for the run history (the admin's background run).",
        )

    def handle(self, *args, apply, customer, batch_size, format, started_by, **options):
        customers = [resolve_or_exit(customer_resolve, ref) for ref in customer or []]
        ids = [c.pk for c in customers] if customers else None
        scope = ", ".join(c.email for c in customers) if customers else "all customers"
        started_by = started_by or "manage.py reconcile_usage" + (" --apply" if apply else "")

        if not apply:

            def emit(scan, findings):
                summary = scan_summary(scan)
                write_report(
                    self.stdout,
                    format,
                    summary,
                    scan.rows(),
                    [],
                    title="Would set (dry run; --apply to write)",
                    extra={"mode": "dry-run"},
                )

            usage_reconcile(customer_ids=ids, apply=False, started_by=started_by, scope=scope, emit=emit)
            return

        try:
            with progress_bar(self.stderr, unit="batch", desc="reconciling") as progress:
                result = usage_reconcile(
                    customer_ids=ids,
                    apply=True,
                    batch_size=batch_size,
                    started_by=started_by,
                    scope=scope,
                    progress=progress,
                )
        except ReconciliationBusy as exc:
            raise CommandError(str(exc), returncode=EXIT_USAGE)
        rows = (
            {
                "check": r.check_name,
                "customer_id": str(r.customer_id),
                "email": r.email,
                "target_id": r.target_id or None,
                "tracked": r.tracked,
                "actual": r.actual,
                "difference": r.difference,
            }
            for r in result.run.rows.order_by(Abs("difference").desc(nulls_last=True), "id").iterator(
                chunk_size=2000
            )
        )
        write_report(
            self.stdout,
            format,
            result.summary,
            rows,
            [],
            title=f"Set (run #{result.run.pk})",
            extra={"mode": "apply", "run": result.run.pk},
        )
        if result.summary["remaining_drift"]:
            self.stderr.write(
                f"{result.summary['remaining_drift']} counters drifted again while the run was going; rerun."
            )
            sys.exit(EXIT_PROBLEM)
