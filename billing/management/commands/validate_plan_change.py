import json
import sys

from billing.management.base import EXIT_PROBLEM, OpsCommand, resolve_or_exit
from billing.services.plans import plan_change_validate, plan_resolve
from usage.selectors import customer_resolve


class Command(OpsCommand):
    help = (
        "Check whether a customer can move to another plan. Exit 0 when allowed (warnings included), 1 when "
        "blocked, with the exact remedy."
    )

    def add_arguments(self, parser):
        parser.add_argument("customer", metavar="EMAIL|ID")
        parser.add_argument(
            "--to", required=True, metavar="PLAN", help="Target plan code (free, starter, growth, pro)."
        )
        parser.add_argument("--format", choices=["table", "json"], default="table")

    def handle(self, *args, customer, to, format, **options):
        found = resolve_or_exit(customer_resolve, customer)
        target = resolve_or_exit(plan_resolve, to)
        result = plan_change_validate(customer=found, target=target)
        if format == "json":
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
        else:
            current = result.current.name if result.current else "no plan"
            verdict = "ALLOWED" if result.allowed else "BLOCKED"
            self.stdout.write(f"{found.email}: {current} -> {target.name} ({result.direction}): {verdict}")
            for block in result.blocks:
                self.stdout.write(f"  blocked: {block}")
            for warning in result.warnings:
                self.stdout.write(f"  warning: {warning}")
        if not result.allowed:
            sys.exit(EXIT_PROBLEM)
