import csv
import json

from billing.management.base import OpsCommand, resolve_or_exit
from billing.management.output import Raw, plain_value
from billing.ops.usage_report import REPORT_FIELDS, month_parse, usage_report


class Command(OpsCommand):
    help = "Usage per customer for the usage periods that started in a month: used, allowance, drawn from credit."

    def add_arguments(self, parser):
        parser.add_argument("--month", required=True, metavar="YYYY-MM")
        parser.add_argument("--format", choices=["table", "json", "csv"], default="table")

    def handle(self, *args, month, format, **options):
        month = resolve_or_exit(month_parse, month)
        out = Raw(self.stdout)
        totals = {
            "rows": 0,
            "ai_interactions": 0,
            "minutes": 0,
            "ai_from_credit": 0,
            "minutes_from_credit": 0,
        }
        rows = usage_report(month)
        if format == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(REPORT_FIELDS)
            for row in rows:
                writer.writerow(["" if row[k] is None else plain_value(row[k]) for k in REPORT_FIELDS])
            return
        if format == "json":
            out.write(json.dumps({"month": month}).rstrip("}") + ', "rows": [')
        else:
            out.write(
                f"Usage for periods starting in {month} (plan: the plan in effect for the period; - = unlimited)\n\n"
            )
            out.write(
                f"{'email':<40} {'plan':<8} {'projects':>8} {'AI used':>10} {'of':>8} {'credit':>7} "
                f"{'minutes':>10} {'of':>8} {'credit':>7}\n"
            )
        for i, row in enumerate(rows):
            totals["rows"] += 1
            for key in ("ai_interactions", "minutes", "ai_from_credit", "minutes_from_credit"):
                totals[key] += row[key] or 0
            if format == "json":
                out.write(
                    ("," if i else "") + "\n  " + json.dumps({k: plain_value(v) for k, v in row.items()})
                )
            else:

                def n(v):
                    return "-" if v is None else str(plain_value(v))

                out.write(
                    f"{row['email'][:40]:<40} {row['plan'] or '-':<8} {row['active_projects']:>8} "
                    f"{n(row['ai_interactions']):>10} {n(row['ai_allowance']):>8} {n(row['ai_from_credit']):>7} "
                    f"{n(row['minutes']):>10} {n(row['minutes_allowance']):>8} {n(row['minutes_from_credit']):>7}\n"
                )
        if format == "json":
            out.write('\n], "totals": ' + json.dumps({k: plain_value(v) for k, v in totals.items()}) + "}\n")
        else:
            out.write(
                f"\n{totals['rows']} usage periods; AI interactions {plain_value(totals['ai_interactions'])} "
                f"({plain_value(totals['ai_from_credit'])} from credit); minutes {plain_value(totals['minutes'])} "
                f"({plain_value(totals['minutes_from_credit'])} from credit)\n"
            )
