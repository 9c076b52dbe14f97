"""Finance's admin pages and their CSV exports (SPEC §7 "Finance").

Each page is an admin view (``admin.site.admin_view``: login, staff, never cached) readable by the
Finance group and superusers only; anyone else gets 403. GET only: nothing here writes. Bad input
(a month that is not YYYY-MM, an unknown plan) answers 400 with the reason on the page, never a 500.

Exports stream: ``StreamingHttpResponse`` over a server-side cursor, a chunk of rows at a time, so a
million-row month never sits in memory. Headers are words a spreadsheet user reads; numbers are exact
decimals without thousands separators (so a spreadsheet sums them); UTF-8 with a BOM (Excel).
"""

import csv
from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import wraps

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from billing.finance import charts, selectors
from billing.models import Plan

FINANCE_GROUP = "Finance"
OVER_LIMIT_PAGE_ROWS = 100
PAGES = (
    ("finance-usage", "Usage by month and plan"),
    ("finance-over-limit", "Over-limit customers"),
    ("finance-credit", "Overage credit sold and consumed"),
    ("finance-trends", "Trends"),
)


def finance_allowed(user) -> bool:
    """Finance reads these pages; superusers read everything. Support and other staff do not."""
    if not (user.is_active and user.is_staff):
        return False
    if user.is_superuser:
        return True
    if not hasattr(user, "_finance_member"):
        user._finance_member = user.groups.filter(name=FINANCE_GROUP).exists()
    return user._finance_member


def finance_pages(request) -> list[dict]:
    """The finance pages this user may open (for the dashboard); empty for everyone else."""
    if not finance_allowed(request.user):
        return []
    return [{"url": reverse(name), "title": title} for name, title in PAGES]


def finance_view(view):
    @wraps(view)
    def inner(request, *args, **kwargs):
        if not finance_allowed(request.user):
            raise PermissionDenied
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        return view(request, *args, **kwargs)

    return admin.site.admin_view(inner)


def _render(request, template: str, title: str, context: dict, status: int = 200) -> TemplateResponse:
    return TemplateResponse(
        request,
        template,
        {
            **admin.site.each_context(request),
            "title": title,
            "finance_nav": [{"url": reverse(name), "title": t, "current": t == title} for name, t in PAGES],
            **context,
        },
        status=status,
    )


def _month_arg(request, *, current: bool = False) -> tuple[str, str | None]:
    """The month asked for and the error for a bad one. By default the last full month (month end's
    review); ``current``: this month (a twelve-month window that ends today)."""
    default = selectors.last_full_month()
    if current:
        default = selectors.month_shift(default, 1)
    raw = request.GET.get("month", "").strip()
    if not raw:
        return default, None
    try:
        return selectors.month_parse(raw), None
    except ValueError as exc:
        return default, f"{_sentence(exc)} Showing {default} instead."


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# --- usage by month and plan ---------------------------------------------------------------------


def _month_or_none(month: str) -> str | None:
    """``month`` if the picker accepts it, else None: no link at the range's edge leads to a 400."""
    try:
        return selectors.month_parse(month)
    except ValueError:
        return None


@finance_view
def usage_page(request):
    month, error = _month_arg(request)
    plan = None
    try:
        plan = selectors.plan_parse(request.GET.get("plan", "").strip())
    except ValueError as exc:
        error = f"{error} " if error else ""
        error += f"{_sentence(exc)} Showing every plan instead."
    usage = selectors.month_usage(month, plan)
    rows, total = usage.rows, usage.total
    for row in rows:
        row.drilldown = (
            reverse("admin:usage_usagetracking_changelist")
            + "?"
            + urlencode({"month": month, "plan": row.plan or "none"})
        )
    csv_query = urlencode({"month": month, **({"plan": plan.code} if plan else {})})
    return _render(
        request,
        "admin/finance/usage.html",
        "Usage by month and plan",
        {
            "month": month,
            "plan": plan,
            "plans": Plan.objects.using(selectors.finance_database()).order_by("price", "code"),
            "rows": rows,
            "total": total,
            "standing": usage.standing,
            "metrics": selectors.METRICS,
            "error": error,
            "csv_url": reverse("finance-usage-csv") + "?" + csv_query,
            "previous_month": _month_or_none(selectors.month_shift(month, -1)),
            "next_month": _month_or_none(selectors.month_shift(month, 1)),
        },
        status=400 if error else 200,
    )


USAGE_CSV_HEADERS = (
    ("email", "Customer email"),
    ("customer_id", "Customer ID"),
    ("plan", "Plan"),
    ("period_start", "Period start (UTC)"),
    ("period_end", "Period end (UTC)"),
    ("active_projects", "Active projects"),
    ("ai_interactions", "AI interactions used"),
    ("ai_allowance", "AI interactions included (blank = unlimited)"),
    ("ai_from_credit", "AI interactions paid from credit"),
    ("minutes", "Transcription minutes used"),
    ("minutes_allowance", "Transcription minutes included (blank = unlimited)"),
    ("minutes_from_credit", "Transcription minutes paid from credit"),
)


@finance_view
def usage_csv(request):
    try:
        month = selectors.month_parse(request.GET.get("month", "").strip() or selectors.last_full_month())
        plan = selectors.plan_parse(request.GET.get("plan", "").strip())
    except ValueError as exc:
        return _bad_export(request, _sentence(exc))
    rows = ([row[key] for key, _ in USAGE_CSV_HEADERS] for row in selectors.usage_rows(month, plan))
    name = f"usage-{month}{'-' + plan.code if plan else ''}.csv"
    return _csv_response(name, [label for _, label in USAGE_CSV_HEADERS], rows)


# --- over-limit customers ------------------------------------------------------------------------


@finance_view
def over_limit_page(request):
    rows = selectors.over_limit_customers(limit=OVER_LIMIT_PAGE_ROWS + 1)
    for row in rows:
        row.url = reverse("admin:usage_customer_change", args=[row.customer_id])
    return _render(
        request,
        "admin/finance/over_limit.html",
        "Over-limit customers",
        {
            "rows": rows[:OVER_LIMIT_PAGE_ROWS],
            "more": len(rows) > OVER_LIMIT_PAGE_ROWS,
            "page_rows": OVER_LIMIT_PAGE_ROWS,
            "csv_url": reverse("finance-over-limit-csv"),
        },
    )


OVER_LIMIT_CSV_HEADERS = (
    "Customer email",
    "Customer ID",
    "Plan",
    "Limit",
    "Used this period",
    "Included in the plan",
    "Paid from credit this period",
    "Over by",
    "Used (% of limit)",
    "Period start (UTC)",
    "Over since (period start, UTC)",
)


@finance_view
def over_limit_csv(request):
    rows = (
        [
            r.email,
            r.customer_id,
            r.plan,
            r.limit_label,
            r.used,
            r.allowance,
            r.credit,
            r.excess,
            r.percent,
            r.period_start,
            r.since,
        ]
        for r in selectors.over_limit_stream()
    )
    return _csv_response("over-limit.csv", OVER_LIMIT_CSV_HEADERS, rows)


# --- overage credit by month ---------------------------------------------------------------------


def _credit_months(request):
    month, error = _month_arg(request, current=True)
    return selectors.month_shift(month, -11), month, error


@finance_view
def credit_page(request):
    first, last, error = _credit_months(request)
    rows = selectors.credit_by_month(first, last)
    months = {}
    for row in rows:  # every month listed; only the lines with activity or a balance shown
        lines = months.setdefault(row.month, [])
        if any((row.granted, row.drawn, row.refunded, row.expired, row.left)):
            lines.append(row)
    totals = {}
    for row in rows:
        key = (row.source_label, row.metric_label)
        t = totals.setdefault(key, {"granted": 0, "drawn": 0, "refunded": 0, "expired": 0, "left": 0})
        for f in ("granted", "drawn", "refunded", "expired"):
            t[f] += getattr(row, f)
        t["left"] = row.left  # the running balance at the last month's end
    return _render(
        request,
        "admin/finance/credit.html",
        "Overage credit sold and consumed",
        {
            "month": last,
            "first": first,
            "months": sorted(months.items(), reverse=True),
            "totals": [{"source": s, "metric": m, **t} for (s, m), t in sorted(totals.items())],
            "error": error,
            "csv_url": reverse("finance-credit-csv") + "?" + urlencode({"month": last}),
        },
        status=400 if error else 200,
    )


CREDIT_CSV_HEADERS = (
    "Month",
    "Credit source",
    "Metric",
    "Granted",
    "Drawn by usage",
    "Refunded or taken back",
    "Expired unused",
    "Left at month end",
)


@finance_view
def credit_csv(request):
    try:
        last = selectors.month_parse(
            request.GET.get("month", "").strip() or selectors.month_shift(selectors.last_full_month(), 1)
        )
    except ValueError as exc:
        return _bad_export(request, _sentence(exc))
    rows = (
        [r.month, r.source_label, r.metric_label, r.granted, r.drawn, r.refunded, r.expired, r.left]
        for r in selectors.credit_by_month(selectors.month_shift(last, -11), last)
    )
    return _csv_response(f"overage-credit-to-{last}.csv", CREDIT_CSV_HEADERS, rows)


# --- trends --------------------------------------------------------------------------------------


@finance_view
def trends_page(request):
    month, error = _month_arg(request, current=True)
    trend = selectors.usage_trend(month)
    plans = list(
        Plan.objects.using(selectors.finance_database()).order_by("price", "code").values_list("code", "name")
    )
    order = {code: i for i, (code, _) in enumerate(plans)}
    plan_names = dict(plans)
    usage_charts = []
    for key, label, unit, _whole in selectors.METRICS:
        series = {
            plan_names.get(code, code or "(no plan)"): values
            for code, values in sorted(
                trend["series"][key].items(), key=lambda kv: order.get(kv[0], len(order))
            )
        }
        usage_charts.append(
            {
                "key": key,
                "title": f"{label} used per month, by plan",
                "unit": unit,
                "svg": charts.line_chart(trend["months"], series, unit=unit, title=label),
                "series": series,
                "table": [
                    (month, [values[i] for values in series.values()])
                    for i, month in enumerate(trend["months"])
                ],
            }
        )
    drift = selectors.drift_trend()
    drift_svg = charts.bar_chart(
        [w["week"] for w in drift],
        {
            "Found by reports": [w["found"] for w in drift],
            "Fixed by reconciliation": [w["fixed"] for w in drift],
        },
        unit="counters",
        title="Drift found and fixed per week",
    )
    return _render(
        request,
        "admin/finance/trends.html",
        "Trends",
        {
            "month": month,
            # The month still running reads "(so far)": its lower usage is not a fall.
            "running": selectors.month_shift(selectors.last_full_month(), 1),
            "usage_charts": usage_charts,
            "drift": drift,
            "drift_svg": drift_svg,
            "error": error,
        },
        status=400 if error else 200,
    )


# --- CSV -----------------------------------------------------------------------------------------


class _Line:
    """csv.writer writes into this and gets the line back, so each row streams as it is made."""

    def write(self, value: str) -> str:
        return value


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value.normalize():f}" if value == value else str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _csv_response(filename: str, headers: Iterable[str], rows: Iterable[Iterable]) -> StreamingHttpResponse:
    writer = csv.writer(_Line())

    def lines() -> Iterator[str]:
        yield "\ufeff" + writer.writerow(list(headers))
        for row in rows:
            yield writer.writerow([_cell(v) for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _bad_export(request, message: str) -> TemplateResponse:
    return _render(request, "admin/finance/error.html", "Export not made", {"error": message}, status=400)


def finance_context(request) -> dict:
    """Context processor: ``finance_pages`` for the dashboard, evaluated only where a template uses it."""
    return {"finance_pages": lambda: finance_pages(request)}
