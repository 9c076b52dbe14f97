import json

from django.core.management.base import CommandError

from billing.adoption.install import (
    AdoptionRefused,
    AlreadyAdopted,
    NotAdopted,
    adoption_install,
    adoption_uninstall,
)
from billing.adoption.preflight import ADDS, BLOCKER, adoption_preflight
from billing.management.base import EXIT_PROBLEM, EXIT_USAGE, OpsCommand

LABELS = {BLOCKER: "BLOCKER", ADDS: "adds", "note": "note"}


class Command(OpsCommand):
    help = (
        "Adopt an existing product database (README, Adopting an existing product database). --check lists, "
        "read-only, every mismatch between the product's schema and what billing-ops needs, with its fix "
        "(exit 0 ready, 1 not ready). Without it, adds billing-ops in one transaction (exit 1 and nothing "
        "written when not ready); --uninstall removes exactly what adoption added. Exit 2: bad input or an "
        "unreachable database."
    )

    def add_arguments(self, parser):
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--check",
            action="store_true",
            help="Only compare the schema with what billing-ops needs (read-only).",
        )
        mode.add_argument(
            "--uninstall",
            action="store_true",
            help="Remove what adoption added; restore the product's triggers.",
        )
        parser.add_argument(
            "--drop-product-counter-triggers",
            action="store_true",
            help="Drop the product's own triggers that write the counters (billing-ops' count them instead).",
        )
        parser.add_argument("--format", choices=["table", "json"], default="table")

    def handle(self, *args, check, uninstall, drop_product_counter_triggers, format, **options):
        if uninstall:
            try:
                adoption_uninstall()
            except NotAdopted as exc:
                raise CommandError(str(exc), returncode=EXIT_USAGE)
            self.stdout.write(
                "uninstalled: billing-ops' tables, columns, constraints, indexes, triggers and "
                "functions removed; the product's own triggers restored"
            )
            return
        if check:
            result = adoption_preflight(drop_product_counter_triggers=drop_product_counter_triggers)
            self._print(result, format)
            if not result.ready:
                raise SystemExit(EXIT_PROBLEM)
            return
        try:
            result = adoption_install(drop_product_counter_triggers=drop_product_counter_triggers)
        except AlreadyAdopted as exc:
            self.stdout.write(str(exc))
            return
        except AdoptionRefused as refused:
            self._print(refused.preflight, format)
            self.stderr.write(
                "adopt: not ready, nothing was changed (fix the blockers above, then run it again)"
            )
            raise SystemExit(EXIT_PROBLEM)
        if format == "json":
            self.stdout.write(json.dumps({"adopted": True, **result.as_dict()}, indent=2))
        else:
            self.stdout.write(
                "adopted: billing-ops installed; run `manage.py check_triggers`, then `manage.py usage_discrepancies`"
            )

    def _print(self, result, format):
        if format == "json":
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
            return
        for item in result.items:
            self.stdout.write(f"{LABELS[item.kind]:<8} {item.subject}: {item.problem}")
            self.stdout.write(f"{'':<8}   fix: {item.fix}")
        doc = result.as_dict()
        verdict = "ready" if result.ready else "NOT READY"
        self.stdout.write(
            f"{verdict}: PostgreSQL {result.server_version} as {result.role}; "
            f"{doc['blockers']} blocker(s), {doc['adds']} thing(s) adopt adds"
        )
