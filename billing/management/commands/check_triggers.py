import json

from django.conf import settings

from billing.management.base import EXIT_PROBLEM, OpsCommand
from billing.ops.checks import trigger_health


class Command(OpsCommand):
    help = (
        "Check that every counter trigger and function is installed, enabled and current. "
        "Exit 0 when healthy, 1 naming what is wrong. Can be run from cron."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["table", "json"], default="table")
        parser.add_argument(
            "--database", default="default", choices=list(settings.DATABASES), help="Database alias to check."
        )

    def handle(self, *args, format, database, **options):
        statuses = trigger_health(using=database)
        broken = [s for s in statuses if not s.ok]
        if format == "json":
            doc = {
                "healthy": not broken,
                "checked": len(statuses),
                "items": [
                    {"kind": s.kind, "name": s.name, "table": s.table, "ok": s.ok, "problem": s.problem}
                    for s in statuses
                ],
            }
            self.stdout.write(json.dumps(doc, indent=2))
        else:
            for s in statuses:
                where = f" on {s.table}" if s.table else ""
                self.stdout.write(
                    f"{'ok  ' if s.ok else 'FAIL'}  {s.kind} {s.name}{where}{'' if s.ok else ': ' + s.problem}"
                )
            self.stdout.write(
                f"{len(statuses) - len(broken)}/{len(statuses)} healthy"
                + ("" if not broken else f", {len(broken)} broken")
            )
        if broken:
            raise SystemExit(EXIT_PROBLEM)
