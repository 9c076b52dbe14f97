"""A finance analyst's month end in a real browser (Debian's chromium via Playwright), SPEC §9 S10.

Log in, open the finance pages from the dashboard, pick last month, read the totals, download the CSV
and check its sums against the page and `usage_report --month`, look at the charts. With
FINANCE_SCREENSHOTS=<folder> set, each page is also saved there (the README's docs/screenshots/).
"""

import csv
import io
import json
import os
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command

from billing.finance.selectors import last_full_month
from billing.ops.integrity import usage_reconcile
from demo.data import demo_data_load
from tests.usage.test_admin_browser import CHROMIUM, page  # noqa: F401  (the browser fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium not installed (scripts/ensure-chromium installs it)"
    ),
]

SCREENSHOTS = os.environ.get("FINANCE_SCREENSHOTS")


def shoot(page, name):  # noqa: F811  (the fixture's name)
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def test_month_end_totals_csv_and_charts(live_server, page, django_user_model, roles, capsys):  # noqa: F811
    from django.contrib.auth.models import Group

    demo_data_load(customers=40, seed=4)
    usage_reconcile(apply=True, started_by="cron")  # S1 found and fixed: the drift chart has a week
    user = django_user_model.objects.create_user("fay", password="pw-for-tests", is_staff=True)
    user.groups.add(Group.objects.get(name="Finance"))
    month = last_full_month()

    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "fay")
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    shoot(page, "finance-dashboard")
    with page.expect_navigation():
        page.click("#finance-module >> text=Usage by month and plan")

    page.fill("#id_month", month)
    with page.expect_navigation():  # read the page the click asked for, loaded (a busy machine is slow)
        page.click("#usage-picker input[type=submit]")
    assert page.locator("#usage-by-plan").is_visible()
    assert f"started in {month}" in page.inner_text(".finance-help")
    total = page.locator('#usage-by-plan tfoot tr[data-plan="total"]')
    shown = {
        field: total.locator(f'td[data-field="{field}"]').inner_text()
        for field in ("periods", "ai_used", "minutes_used", "minutes_from_credit")
    }
    exact = {
        field: Decimal(total.locator(f'td[data-field="{field}"]').get_attribute("data-value"))
        for field in shown
    }
    assert shown["periods"] == f"{exact['periods']:,}"  # thousands separators, as people read them
    # Whether these figures are final, in words, above the table and within the page's width.
    standing = page.locator("#month-standing")
    assert standing.is_visible() and standing.bounding_box()["width"] <= 1400
    assert standing.inner_text().startswith(("Final.", "Not final", "Recomputed"))
    shoot(page, "finance-usage")

    # The drill-down to one plan's customers: every column on screen at 1,400 px (the transcription
    # minutes ran off the list, behind its filters).
    with page.expect_navigation():
        page.click('#usage-by-plan tbody tr[data-plan="starter"] a')
    assert "Select usage period to view" in page.inner_text("#content")
    results = page.locator("#changelist .results")
    assert results.evaluate("e => e.scrollWidth <= e.clientWidth"), "the list is wider than the page"
    shoot(page, "finance-drill-down")
    with page.expect_navigation():
        page.go_back()

    with page.expect_download() as download:
        page.click("#csv-link")
    assert download.value.suggested_filename == f"usage-{month}.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text("utf-8-sig"))))
    sums = defaultdict(Decimal)
    for row in rows:
        sums["ai_used"] += Decimal(row["AI interactions used"])
        sums["minutes_used"] += Decimal(row["Transcription minutes used"])
        sums["minutes_from_credit"] += Decimal(row["Transcription minutes paid from credit"])
    assert len(rows) == exact["periods"]
    for field in ("ai_used", "minutes_used", "minutes_from_credit"):
        assert sums[field] == exact[field], field

    capsys.readouterr()
    call_command("usage_report", "--month", month, "--format", "json")
    command = json.loads(capsys.readouterr().out)["totals"]
    assert command["rows"] == exact["periods"]
    assert Decimal(str(command["ai_interactions"])) == exact["ai_used"]
    assert Decimal(str(command["minutes"])) == exact["minutes_used"]

    with page.expect_navigation():
        page.click(".finance-nav >> text=Over-limit customers")
    assert page.locator("#over-limit tbody tr[data-email]").count() >= 1
    shoot(page, "finance-over-limit")

    with page.expect_navigation():
        page.click(".finance-nav >> text=Overage credit sold and consumed")
    assert "Purchased" in page.inner_text("#credit-totals")
    shoot(page, "finance-credit")

    with page.expect_navigation():
        page.click(".finance-nav >> text=Trends")
    for chart in ("#chart-ai", "#chart-minutes", "#chart-drift"):
        svg = page.locator(f"{chart} svg.finance-chart")
        assert svg.is_visible() and svg.bounding_box()["width"] > 300, chart
    assert page.locator("#chart-minutes svg polyline").count() >= 3  # a line per plan
    assert page.locator("#chart-drift tbody tr").last.locator("td").nth(2).inner_text() == "3"
    shoot(page, "finance-trends")
