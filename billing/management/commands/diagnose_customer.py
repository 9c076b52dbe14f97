import json

from billing.management.base import OpsCommand, resolve_or_exit
from billing.management.output import plain_value
from billing.ops.diagnosis import customer_diagnose
from usage.selectors import customer_resolve


class Command(OpsCommand):
    help = (
        "Diagnose one customer: plan, period, every counter beside its truth, allowance left, findings, "
        "recent reconciliation runs, and the exact fix to run."
    )

    def add_arguments(self, parser):
        parser.add_argument("customer", metavar="EMAIL|ID")
        parser.add_argument("--format", choices=["table", "json"], default="table")

    def handle(self, *args, customer, format, **options):
        found = resolve_or_exit(customer_resolve, customer)
        d = customer_diagnose(customer=found)
        if format == "json":
            self.stdout.write(json.dumps(d.as_dict(), indent=2, default=plain_value))
            return
        w = self.stdout.write
        c = d.customer
        w(f"{c.email}  ({c.name or 'no name'})  id {c.pk}")
        s = d.subscription
        plan = d.plan.name if d.plan else "no plan"
        w(
            f"Plan: {plan}"
            + (
                f"   subscription: {s.status} via {s.processor} {s.external_subscription_id or ''}".rstrip()
                if s
                else "   (no subscription: Free)"
            )
        )
        w(f"Period: {c.current_period_start:%Y-%m-%d %H:%M} to {c.current_period_end:%Y-%m-%d %H:%M} UTC")
        w("")
        w(f"  {'counter':<22} {'tracked':>12} {'actual':>12} {'allowance':>10} {'left':>10}")
        for x in d.counters:
            flag = "  DRIFT" if x.drifted else ""
            target = (
                ""
                if x.check.startswith("active") or x.check in ("ai_interactions", "minutes")
                else f" ({x.target_id[:8]})"
            )
            w(
                f"  {(x.label + target):<22} {_s(x.tracked):>12} {_s(x.actual):>12} {_s(x.allowance):>10} {_s(x.left):>10}{flag}"
            )
        if d.findings:
            w("\nFindings:")
            for f in d.findings:
                w(f"  {f.check}: {f.detail}")
        if d.runs:
            w("\nRecent reconciliation rows:")
            for r in d.runs:
                w(
                    f"  run #{r.run_id} {r.run.started_at:%Y-%m-%d %H:%M} by {r.run.started_by}: {r.check_name} {_s(r.tracked)} -> {_s(r.actual)}{' (fixed)' if r.fixed else ''}"
                )
        if d.audit:
            w("\nAudit log:")
            for a in d.audit:
                w(f"  {a.at:%Y-%m-%d %H:%M} {a.actor} {a.action}: {a.before} -> {a.after}")
        w("\nFix:" if d.fixes else "\nNothing to fix.")
        for fix in d.fixes:
            w(f"  {fix}")


def _s(value):
    if value is None:
        return "-"
    return str(value)[:19]
