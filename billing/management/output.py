"""Report output for the commands: table for people, JSON and CSV for machines (SPEC §6, §8).

Rows are written as they stream in: a million-customer report never sits in memory (OpsCommand
spools them to a temporary file and passes them on to stdout only once the command succeeded).
Numbers are exact: a fraction is a JSON string ("12.5"), never a float.
"""

import csv
import json
from decimal import Decimal

from usage.numbers import number_plain

ROW_FIELDS = ("check", "customer_id", "email", "target_id", "tracked", "actual", "difference")


def plain_value(value):
    """A JSON/CSV-ready value: numbers by number_plain, times as ISO 8601, None as None, the rest as text."""
    if value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, Decimal):
        return number_plain(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


class Raw:
    """Write exactly what is given: Django's OutputWrapper would end every write with a newline."""

    def __init__(self, out):
        self.out = out

    def write(self, text):
        if hasattr(self.out, "style_func"):
            self.out.write(text, ending="")
        else:
            self.out.write(text)


def write_report(
    out, fmt: str, summary: dict, rows, findings, *, title: str = "Discrepancies", extra: dict | None = None
):
    out = Raw(out)
    if fmt == "json":
        _json(out, summary, rows, findings, extra or {})
    elif fmt == "csv":
        _csv(out, rows, findings)
    else:
        _table(out, summary, rows, findings, title)


def _json(out, summary, rows, findings, extra):
    out.write('{"summary": ' + json.dumps(summary, default=plain_value))
    for key, value in extra.items():
        out.write(f", {json.dumps(key)}: " + json.dumps(value, default=plain_value))
    out.write(', "discrepancies": [')
    for i, row in enumerate(rows):
        out.write(
            ("," if i else "") + "\n  " + json.dumps({k: row[k] for k in ROW_FIELDS}, default=plain_value)
        )
    out.write('\n], "findings": [')
    for i, finding in enumerate(findings):
        out.write(("," if i else "") + "\n  " + json.dumps(finding.as_dict(), default=plain_value))
    out.write("\n]}\n")


def _csv(out, rows, findings):
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("kind", *ROW_FIELDS, "detail"))
    for row in rows:
        writer.writerow(("discrepancy", *(_cell(row[k]) for k in ROW_FIELDS), ""))
    for f in findings:
        writer.writerow(
            ("finding", f.check, f.customer_id or "", f.email or "", f.target_id or "", "", "", "", f.detail)
        )


def _cell(value):
    return "" if value is None else plain_value(value) if isinstance(value, Decimal) else value


def _table(out, summary, rows, findings, title):
    out.write(
        f"Customers checked: {summary['customers_checked']}   with drift: {summary['customers_with_drift']}   "
        f"drifted counters: {summary['discrepancies']}\n"
    )
    metrics = summary.get("metrics") or summary.get("metrics_before") or {}
    if metrics:
        out.write("\n  check                  tracked (total)     actual (total)\n")
        for check, m in metrics.items():
            out.write(f"  {check:<22} {plain_value(m['tracked']):>15} {plain_value(m['actual']):>18}\n")
    header = ("check", "email", "tracked", "actual", "diff", "target")
    out.write(f"\n{title}, largest difference first:\n")
    count = 0
    for row in rows:
        if count == 0:
            out.write(
                f"  {header[0]:<20} {header[1]:<40} {header[2]:>10} {header[3]:>10} {header[4]:>8}  {header[5]}\n"
            )
        count += 1
        out.write(
            f"  {row['check']:<20} {str(row['email'] or row['customer_id']):<40} {_short(row['tracked']):>10} "
            f"{_short(row['actual']):>10} {_short(row['difference'], sign=True):>8}  {row['target_id'] or '(no row)'}\n"
        )
    if not count:
        out.write("  none: every counter matches its source rows.\n")
    if findings:
        out.write("\nFindings (not counter drift):\n")
        for f in findings:
            who = f" {f.email}" if f.email else ""
            fix = f"  -> {f.fix}" if f.fix else ""
            out.write(f"  {f.check:<15}{who}: {f.detail}{fix}\n")


def _short(value, sign=False):
    if value is None:
        return "-"
    if isinstance(value, (Decimal, str)):
        try:
            value = Decimal(plain_value(Decimal(value)))
        except ArithmeticError:
            return str(value)[:19]
    if isinstance(value, (int, Decimal)):
        return f"{value:+}" if sign else str(value)
    return str(value)[:19]
