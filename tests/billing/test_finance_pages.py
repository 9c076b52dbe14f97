"""Finance's pages (SPEC §7 "Finance", §9 S10): the numbers equal `usage_report --month`, the CSV and the
credit ledger; only Finance and superusers read them; bad input is a 400 with the reason, never a 500."""

import csv
import io
import json
import re
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.finance.selectors import last_full_month, month_bounds, month_shift
from billing.models import CreditDraw, CreditGrant
from billing.ops.findings import over_limit
from billing.ops.integrity import usage_reconcile
from billing.ops.usage_report import FIRST_MONTH, MONTHS_AHEAD
from billing.services.credits import credit_grant
from demo.data import (
    S1_MISSING_ROW,
    S1_PHANTOM_THREE,
    S1_SIX_PROJECTS,
    SCENARIOS,
    demo_data_load,
    plans_ensure,
)
from usage.models import Customer

pytestmark = pytest.mark.django_db

THIS_MONTH = month_shift(last_full_month(), 1)
METRIC_COLUMNS = {  # page field -> (command/CSV key, CSV header)
    "active_projects": ("active_projects", "Active projects"),
    "ai_used": ("ai_interactions", "AI interactions used"),
    "ai_from_credit": ("ai_from_credit", "AI interactions paid from credit"),
    "minutes_used": ("minutes", "Transcription minutes used"),
    "minutes_from_credit": ("minutes_from_credit", "Transcription minutes paid from credit"),
}
ROW = re.compile(r'<tr data-plan="([^"]+)">(.*?)</tr>', re.S)
CELL = re.compile(r'data-field="([^"]+)" data-value="([^"]*)"')


@pytest.fixture
def demo(db):
    demo_data_load(customers=16, seed=11)  # the demo's population and scenarios, without its logins


@pytest.fixture
def finance(staff_client):
    return staff_client("fay", "Finance")


def page_numbers(html: str) -> dict:
    """{plan code or "total": {field: Decimal or None}} from the usage table's data-value cells."""
    return {
        plan: {field: Decimal(value) if value else None for field, value in CELL.findall(cells)}
        for plan, cells in ROW.findall(html)
    }


def command_numbers(month: str, capsys) -> tuple[dict, dict]:
    capsys.readouterr()
    call_command("usage_report", "--month", month, "--format", "json")
    document = json.loads(capsys.readouterr().out)
    per_plan: dict = defaultdict(lambda: defaultdict(Decimal))
    unlimited = defaultdict(set)
    for row in document["rows"]:
        plan = per_plan[row["plan"] or "none"]
        plan["periods"] += 1
        for field, (key, _) in METRIC_COLUMNS.items():
            plan[field] += Decimal(str(row[key]))
        for metric, used, allowance in (
            ("ai", row["ai_interactions"], row["ai_allowance"]),
            ("minutes", row["minutes"], row["minutes_allowance"]),
        ):
            if allowance is None:
                unlimited[row["plan"]].add(metric)
            else:
                plan[f"{metric}_allowance"] += Decimal(str(allowance))
                plan[f"{metric}_overage"] += max(Decimal(str(used)) - Decimal(str(allowance)), Decimal(0))
    for code, metrics in unlimited.items():
        for metric in metrics:
            per_plan[code][f"{metric}_allowance"] = None
    return {code: dict(v) for code, v in per_plan.items()}, document["totals"]


def csv_rows(response) -> list[dict]:
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


@pytest.mark.parametrize("month", [THIS_MONTH, last_full_month()])
def test_usage_by_plan_equals_the_command_and_the_csv(demo, finance, capsys, month):
    html = finance.get("/admin/finance/usage/", {"month": month}).content.decode()
    page = page_numbers(html)
    expected, totals = command_numbers(month, capsys)
    assert expected, "the demo has usage periods in this month"
    assert set(page) == set(expected) | {"total"}
    for code, numbers in expected.items():
        for field, value in numbers.items():
            assert page[code][field] == value, (code, field)
    assert page["total"]["periods"] == totals["rows"]
    assert page["total"]["ai_used"] == Decimal(str(totals["ai_interactions"]))
    assert page["total"]["minutes_from_credit"] == Decimal(str(totals["minutes_from_credit"]))

    rows = csv_rows(finance.get("/admin/finance/usage.csv", {"month": month}))
    assert len(rows) == totals["rows"]
    by_plan: dict = defaultdict(lambda: defaultdict(Decimal))
    for row in rows:
        for field, (_, header) in METRIC_COLUMNS.items():
            by_plan[row["Plan"]][field] += Decimal(row[header])  # exact decimals, no separators
    for code, numbers in by_plan.items():
        for field, value in numbers.items():
            assert page[code][field] == value, (code, field)


def test_s5_overage_shows_as_over_and_from_credit_with_people_formatting(demo, finance):
    html = finance.get("/admin/finance/usage/", {"month": THIS_MONTH}).content.decode()
    starter = page_numbers(html)["starter"]
    assert starter["minutes_from_credit"] >= 20  # S5: 620 of 600 minutes, 20 drawn from its pack
    assert starter["minutes_overage"] >= 20
    # Starter's price with its currency, as support's customer page shows it (one formatter: finance
    # showed "$19.00" beside support's "USD 19.00" before)
    assert "USD 19.00" in html
    assert "$" not in html
    visible = re.sub(r'data-value="[^"]*"', "", html)  # exact values for machines; text for people
    assert ".000" not in visible


def test_one_plan_and_its_drilldown_to_the_customers(demo, finance):
    html = finance.get("/admin/finance/usage/", {"month": THIS_MONTH, "plan": "starter"}).content.decode()
    assert set(page_numbers(html)) == {"starter", "total"}
    link = re.search(r'<tr data-plan="starter">\s*<th scope="row"><a href="([^"]+)"', html).group(1)
    assert link == f"/admin/usage/usagetracking/?month={THIS_MONTH}&amp;plan=starter"
    listing = finance.get(link.replace("&amp;", "&")).content.decode()
    s5 = SCENARIOS["s5"][0]
    assert s5 in listing  # a Starter customer
    assert SCENARIOS["s7"][0] not in listing  # a Growth customer
    free = finance.get("/admin/usage/usagetracking/", {"month": THIS_MONTH, "plan": "free"}).content.decode()
    assert S1_SIX_PROJECTS in free and s5 not in free
    for bad in ("\x00", "unknown"):
        nothing = finance.get("/admin/usage/usagetracking/", {"month": THIS_MONTH, "plan": bad})
        assert nothing.status_code == 200 and s5 not in nothing.content.decode()


def test_over_limit_lists_who_which_limit_by_how_much_and_since_when(demo, finance):
    usage_reconcile(apply=True, started_by="test")  # S1: the counters made true first
    html = finance.get("/admin/finance/over-limit/").content.decode()
    six = re.search(
        rf'<tr data-email="{re.escape(S1_SIX_PROJECTS)}" data-limit="active_projects">(.*?)</tr>', html, re.S
    )
    assert six, "S1's six-project Free customer is over its project limit"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", six.group(1), re.S)
    assert cells[1:7] == ["Free", "Active projects", "6", "1", "0", "5"] and cells[7] == "600 %"
    assert "this period" in cells[8]
    assert S1_MISSING_ROW in html and S1_PHANTOM_THREE not in html  # 2 of 1; the phantom has none
    rows = csv_rows(finance.get("/admin/finance/over-limit.csv"))
    line = next(r for r in rows if r["Customer email"] == S1_SIX_PROJECTS)
    assert (line["Limit"], line["Used this period"], line["Over by"]) == ("Active projects", "6", "5")
    assert len(rows) == html.count("<tr data-email=")


def test_over_since_is_the_first_of_the_unbroken_run_of_periods_over(demo, finance):
    usage_reconcile(apply=True, started_by="test")
    six = Customer.objects.get(email=S1_SIX_PROJECTS)
    from usage.models import UsageTracking
    from usage.services.counters import counter_writes_allowed

    with counter_writes_allowed():
        for back, projects in ((1, 4), (2, 1)):  # last month over (4 of 1), the month before not
            month = month_shift(six.current_period_start.strftime("%Y-%m"), -back)
            start, end = month_bounds(month)
            UsageTracking.objects.create(
                customer=six, period_start=start, period_end=end, month=month, active_projects_count=projects
            )
    rows = csv_rows(finance.get("/admin/finance/over-limit.csv"))
    line = next(r for r in rows if r["Customer email"] == S1_SIX_PROJECTS)
    assert line["Over since (period start, UTC)"].startswith(month_shift(THIS_MONTH, -1))


def test_over_since_runs_on_across_a_month_without_a_period(demo, finance):
    """The run is of the customer's periods in order: a month with no period (the customer was away)
    does not break it; a period under the limit does."""
    usage_reconcile(apply=True, started_by="test")
    six = Customer.objects.get(email=S1_SIX_PROJECTS)
    from usage.models import UsageTracking
    from usage.services.counters import counter_writes_allowed

    this = six.current_period_start.strftime("%Y-%m")
    with counter_writes_allowed():  # two months ago over (3 of 1), last month no period, before that 1 of 1
        for back, projects in ((2, 3), (3, 1)):
            month = month_shift(this, -back)
            start, end = month_bounds(month)
            UsageTracking.objects.create(
                customer=six, period_start=start, period_end=end, month=month, active_projects_count=projects
            )
    rows = csv_rows(finance.get("/admin/finance/over-limit.csv"))
    line = next(r for r in rows if r["Customer email"] == S1_SIX_PROJECTS)
    assert line["Over since (period start, UTC)"].startswith(month_shift(this, -2))
    html = finance.get("/admin/finance/over-limit/").content.decode()
    six_row = re.search(
        rf'<tr data-email="{re.escape(S1_SIX_PROJECTS)}" data-limit="active_projects">(.*?)</tr>', html, re.S
    )
    since = month_bounds(month_shift(this, -2))[0]
    assert six_row and f"{since.day} {since:%b %Y}" in six_row.group(1)


def test_the_over_limit_page_cuts_among_equal_overshoots_as_the_csv_orders_them(demo, finance, monkeypatch):
    """Lines over by the same share are ordered by email: the page's first lines are the CSV's first
    lines, also when the page ends in the middle of such a tie."""
    from billing.finance import views
    from usage.models import UsageTracking
    from usage.services.counters import counter_writes_allowed

    usage_reconcile(apply=True, started_by="test")
    with counter_writes_allowed():  # five Free customers (no subscription), each 3 active projects of 1
        for name in ("tie-c", "tie-a", "tie-e", "tie-b", "tie-d"):
            customer = Customer.objects.create(email=f"{name}@over.test")
            customer.refresh_from_db()
            UsageTracking.objects.create(
                customer=customer,
                period_start=customer.current_period_start,
                period_end=customer.current_period_end,
                month=customer.current_period_start.strftime("%Y-%m"),
                active_projects_count=3,
            )
    every = csv_rows(finance.get("/admin/finance/over-limit.csv"))
    emails = [r["Customer email"] for r in every]
    tied = [e for e in emails if e.endswith("@over.test")]
    assert tied == [f"tie-{x}@over.test" for x in "abcde"]
    first = emails.index("tie-a@over.test")
    assert emails[first : first + 5] == tied  # nothing else over by the same share here
    for shown in (first + 1, first + 3):  # the page ends among the tied lines
        monkeypatch.setattr(views, "OVER_LIMIT_PAGE_ROWS", shown)
        html = finance.get("/admin/finance/over-limit/").content.decode()
        page = re.findall(r'<tr data-email="([^"]+)" data-limit="([^"]+)">', html)
        assert [email for email, _ in page] == emails[:shown]


def test_credit_page_equals_the_ledger(demo, finance):
    customer = Customer.objects.get(email=SCENARIOS["goodwill"][0])
    now = timezone.now()
    expired = credit_grant(
        customer=customer,
        metric="minutes",
        quantity="12.5",
        source="purchase",
        actor="test",
        expires_at=now + timedelta(seconds=1),
    )
    refunded = credit_grant(customer=customer, metric="minutes", quantity=40, source="purchase", actor="test")
    CreditDraw.objects.create(grant=refunded, customer=customer, quantity=Decimal(40), kind="refund")
    disputed = credit_grant(customer=customer, metric="minutes", quantity=3, source="purchase", actor="test")
    CreditDraw.objects.create(grant=disputed, customer=customer, quantity=Decimal(3), kind="chargeback")
    CreditGrant.objects.filter(pk=expired.pk).update(expires_at=now - timedelta(seconds=1))

    rows = csv_rows(finance.get("/admin/finance/credit.csv", {"month": THIS_MONTH}))
    assert len(rows) == 12 * 4
    this = {(r["Credit source"], r["Metric"]): r for r in rows if r["Month"] == THIS_MONTH}
    grants = CreditGrant.objects.all()
    for source, label in (("purchase", "Purchased"), ("goodwill", "Goodwill")):
        for metric, metric_label in (
            ("minutes", "Transcription minutes"),
            ("ai_interaction", "AI interactions"),
        ):
            line = this[(label, metric_label)]
            mine = grants.filter(source=source, metric=metric)
            draws = CreditDraw.objects.filter(grant__in=mine)
            assert Decimal(line["Granted"]) == sum((g.granted for g in mine), Decimal(0))
            assert Decimal(line["Drawn by usage"]) == sum(
                (d.quantity for d in draws if d.kind == "usage"), Decimal(0)
            )
            assert Decimal(line["Refunded or taken back"]) == sum(
                (d.quantity for d in draws if d.kind in ("refund", "chargeback")), Decimal(0)
            )
            live = [g for g in mine if g.expires_at is None or g.expires_at > now]
            assert Decimal(line["Left at month end"]) == sum((g.remaining for g in live), Decimal(0))
    purchased = this[("Purchased", "Transcription minutes")]
    assert (purchased["Expired unused"], purchased["Refunded or taken back"]) == ("12.5", "43")
    assert Decimal(purchased["Left at month end"]) == 30  # S5's pack: 50 bought, 20 drawn

    html = finance.get("/admin/finance/credit/", {"month": THIS_MONTH}).content.decode()
    assert "12.5" in html and "Goodwill" in html and "Purchased" in html and ".000" not in html


def test_a_refund_takes_credit_back_but_pays_for_no_usage(demo, finance):
    """Issue 10's take-backs (credit_draws.kind refund/chargeback) are no usage paid from credit: not
    in usage_report's "from credit", not on the usage page, not lifting an over-limit customer's limit."""
    from billing.ops.usage_report import usage_report

    s5 = Customer.objects.get(email=SCENARIOS["s5"][0])
    pack = CreditGrant.objects.get(customer=s5, metric="minutes", source="purchase")
    mine = [r for r in usage_report(THIS_MONTH) if r["email"] == s5.email]
    before = sum((r["minutes_from_credit"] for r in mine), Decimal(0))
    page_before = page_numbers(finance.get("/admin/finance/usage/", {"month": THIS_MONTH}).content.decode())
    assert before == pack.granted - pack.remaining > 0  # S5's pack: what usage drew this period
    CreditDraw.objects.create(grant=pack, customer=s5, quantity=pack.remaining, kind="refund")

    mine = [r for r in usage_report(THIS_MONTH) if r["email"] == s5.email]
    assert sum((r["minutes_from_credit"] for r in mine), Decimal(0)) == before
    page = page_numbers(finance.get("/admin/finance/usage/", {"month": THIS_MONTH}).content.decode())
    assert page["total"]["minutes_from_credit"] == page_before["total"]["minutes_from_credit"]
    from usage.models import UsageEvent

    # 10 minutes more than the allowance plus what credit paid for, as usage (the event and, by its
    # trigger, the counter): support's finding reads the events, Finance's page the counter.
    UsageEvent.objects.create(customer=s5, metric="minutes", quantity=10)
    over = [
        r for r in csv_rows(finance.get("/admin/finance/over-limit.csv")) if r["Customer email"] == s5.email
    ]
    assert [(r["Paid from credit this period"], r["Over by"]) for r in over] == [
        (f"{before.normalize():f}", "10")
    ]
    found = [f for f in over_limit([s5.pk]) if "transcription minutes" in f.detail]  # support's finding
    assert len(found) == 1, "S5 is 10 minutes over what its allowance and its drawn credit cover"


def test_trends_draw_svg_charts_with_their_tables_and_no_outside_resource(demo, finance):
    usage_reconcile(apply=True, started_by="test")  # S1's three counters: found and fixed this week
    html = finance.get("/admin/finance/trends/").content.decode()
    assert html.count("<svg") - html.count('class="base-svgs"') >= 3
    for chart in ("chart-ai", "chart-minutes", "chart-drift"):
        assert f'id="{chart}"' in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    week = re.findall(
        r'<tr data-week="[^"]+"><td>[^<]+</td><td class="num">(\d+)</td><td class="num">(\d+)</td>', html
    )
    assert week[-1] == ("3", "3")  # this week: 3 drifted counters found, 3 fixed
    month_row = re.search(rf'<tr data-month="{THIS_MONTH}">(.*?)</tr>', html, re.S).group(1)
    assert "<td" in month_row
    # the month still running says so (its usage so far looked like a fall on the chart beside it)
    assert f"<td>{THIS_MONTH} (so far)</td>" in month_row
    assert f"<td>{month_shift(THIS_MONTH, -1)}</td>" in html


@pytest.mark.parametrize(
    ("url", "params", "message"),
    [
        ("/admin/finance/usage/", {"month": "garbage"}, "Month must be YYYY-MM"),
        ("/admin/finance/usage/", {"month": "0000-01"}, "Month 0000-01 is out of range: from 2000-01"),
        ("/admin/finance/usage/", {"month": "2026-13"}, "Month 2026-13 does not exist: a month is 01 to 12"),
        ("/admin/finance/usage/", {"plan": "unknown"}, "No plan &#x27;unknown&#x27;; the plans are: free"),
        ("/admin/finance/credit/", {"month": "2026-1"}, "Month must be YYYY-MM"),
        ("/admin/finance/trends/", {"month": "x" * 5000}, "Month must be YYYY-MM"),
        ("/admin/finance/usage.csv", {"month": "0000-01"}, "Month 0000-01 is out of range: from 2000-01"),
        ("/admin/finance/usage.csv", {"plan": "\x00"}, "No plan"),
        ("/admin/finance/usage/", {"plan": "\x00", "month": "\x00"}, "No plan"),
        ("/admin/finance/credit.csv", {"month": "2026-00"}, "Month 2026-00 does not exist"),
    ],
)
def test_bad_input_is_a_400_that_says_why(finance, url, params, message):
    plans_ensure()
    response = finance.get(url, params)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_only_finance_and_superusers_read_the_pages_and_nobody_posts(
    demo, finance, staff_client, admin_client, client
):
    support = staff_client("sam", "Support")
    pages = [
        "/admin/finance/usage/",
        "/admin/finance/usage.csv",
        "/admin/finance/over-limit/",
        "/admin/finance/over-limit.csv",
        "/admin/finance/credit/",
        "/admin/finance/credit.csv",
        "/admin/finance/trends/",
    ]
    for url in pages:
        assert finance.get(url).status_code == 200, url
        assert admin_client.get(url).status_code == 200, url
        assert support.get(url).status_code == 403, url
        anonymous = client.get(url)
        assert anonymous.status_code == 302 and anonymous.url.startswith("/admin/login/"), url
        assert finance.post(url).status_code == 405, url
    assert 'id="finance-module"' in finance.get("/admin/").content.decode()
    assert 'id="finance-module"' in admin_client.get("/admin/").content.decode()
    assert 'id="finance-module"' not in support.get("/admin/").content.decode()


@pytest.mark.parametrize(
    "url",
    [
        f"/admin/finance/usage/?month={THIS_MONTH}",
        "/admin/finance/over-limit/",
        "/admin/finance/credit/",
        "/admin/finance/trends/",
        f"/admin/usage/usagetracking/?month={THIS_MONTH}&plan=starter",
    ],
)
def test_queries_per_page_are_few_and_do_not_grow_with_customers(finance, url):
    counts = []
    for customers in (3, 30):
        demo_data_load(customers=customers, seed=customers)
        with CaptureQueriesContext(connection) as queries:
            assert finance.get(url).status_code == 200
        counts.append(len(queries))
        Customer.objects.all().delete()
    assert 0 < counts[0] == counts[1] <= 12, counts


def test_the_over_limit_page_shows_the_first_lines_and_the_csv_has_them_all(demo, finance, monkeypatch):
    from billing.finance import views

    usage_reconcile(apply=True, started_by="test")
    every = csv_rows(finance.get("/admin/finance/over-limit.csv"))
    assert len(every) >= 2
    monkeypatch.setattr(views, "OVER_LIMIT_PAGE_ROWS", 1)
    html = finance.get("/admin/finance/over-limit/").content.decode()
    assert html.count("<tr data-email=") == 1 and "The first 1 lines; the CSV has them all." in html
    assert f'data-email="{every[0]["Customer email"]}"' in html  # the same order: largest overshoot first


def test_a_filtered_usage_period_list_counts_up_to_its_cap(demo, finance, monkeypatch):
    from billing.finance import admin as finance_admin

    monkeypatch.setattr(finance_admin, "COUNT_CAP", 3)
    html = finance.get("/admin/usage/usagetracking/", {"month": THIS_MONTH}).content.decode()
    assert "4 usage periods" in html  # counted to the cap and one beyond, never the whole month


@pytest.mark.parametrize("month", ["2000-01", "2000-11"])
@pytest.mark.parametrize(
    "url", ["/admin/finance/credit/", "/admin/finance/credit.csv", "/admin/finance/trends/"]
)
def test_twelve_months_to_the_first_months_of_the_range_are_shown_not_a_500(finance, url, month):
    """The twelve months to 2000-01 (the first month the picker accepts) start before it: month_bounds
    and month_shift re-checked the range on the window's first month and raised (a 500)."""
    plans_ensure()
    response = finance.get(url, {"month": month})
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert month.encode() in body
    assert month_shift(month, -11).encode() in body  # the whole window, empty months included


@pytest.mark.parametrize("edge", ["first", "last"])
def test_the_month_links_at_the_ranges_edges_lead_to_a_page_not_a_400(finance, edge):
    """At 2000-01 the "previous month" link led to 1999-12, and at the last month the picker accepts the
    "next month" link to the month after: both answered 400 (out of range). Every month link on the page
    now answers 200, and the link past the edge is not shown."""
    plans_ensure()
    first = FIRST_MONTH
    last = month_shift(last_full_month(), 1 + MONTHS_AHEAD)  # this month + MONTHS_AHEAD
    month = first if edge == "first" else last
    response = finance.get("/admin/finance/usage/", {"month": month})
    assert response.status_code == 200
    links = set(re.findall(r'href="\?month=(\d{4}-\d{2})', response.content.decode()))
    assert links == ({month_shift(first, 1)} if edge == "first" else {month_shift(last, -1)})
    for linked in links:
        assert finance.get("/admin/finance/usage/", {"month": linked}).status_code == 200
