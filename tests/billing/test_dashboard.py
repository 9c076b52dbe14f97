"""The admin index is a dashboard (SPEC §7): each figure, when it was measured, one click to its rows."""

import re

import pytest
from django.db import connection
from django.urls import reverse

from billing.models import WebhookEvent
from billing.ops.integrity import discrepancy_report
from demo.data import plans_ensure
from tests.conftest import plant_s1
from usage.models import Project

pytestmark = pytest.mark.django_db


def _figures(client) -> dict[str, tuple[str, str]]:
    """Label -> (value, link of the value) as the dashboard shows them."""
    html = client.get(reverse("admin:index")).content.decode()
    figures = {}
    for row in re.findall(r'<tr class="figure[^"]*">(.*?)</tr>', html, re.S):
        label = re.search(r'<a href="[^"]*">([^<]*)</a>', row).group(1)
        value = re.search(r'<td style="text-align:right[^"]*">(.*?)</td>', row, re.S).group(1)
        link = re.search(r'href="([^"]*)"', value)
        figures[label] = (
            re.sub(r"<[^>]+>", "", value).strip(),
            link.group(1).replace("&amp;", "&") if link else "",
        )
    return figures


def _listed(client, link) -> set[str]:
    html = client.get(link).content.decode()
    return set(re.findall(r'class="field-email"><a[^>]*>([^<]+)</a>', html))


def test_before_any_report_the_figures_say_not_measured(admin_client):
    figures = _figures(admin_client)
    assert figures["customers with drift"][0] == "—"
    assert figures["customers over a limit"][0] == "—"
    assert figures["failed webhooks in the last 24 h"][0] == "0"
    assert figures["unhealthy triggers and functions"][0] == "0"
    assert "no report over every customer yet" in admin_client.get(reverse("admin:index")).content.decode()


def test_each_figure_links_to_the_rows_behind_it(admin_client):
    plans_ensure()
    s1 = plant_s1()
    WebhookEvent.objects.create(
        processor="stripe",
        event_id="evt_bad",
        event_type="invoice.paid",
        status="failed",
        payload={},
        error="x",
    )
    discrepancy_report(started_by="cron")
    figures = _figures(admin_client)
    value, link = figures["customers with drift"]
    assert value == "3" and _listed(admin_client, link) == {c.email for c in s1.values()}
    value, link = figures["customers over a limit"]  # by the truth: six (6/1) and missing (2/1)
    assert value == "2" and _listed(admin_client, link) == {s1["six"].email, s1["missing"].email}
    value, link = figures["failed webhooks in the last 24 h"]
    assert value == "1" and "evt_bad" in admin_client.get(link).content.decode()
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "last full report #" in html and "Every counter trigger and function is installed" in html
    assert 'id="finance-module"' in html  # Finance's pages, in the side column


def test_a_disabled_trigger_shows_on_the_dashboard(admin_client):
    trigger = next(t for t in Project._meta.triggers if t.name == "projects_on_insert")
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE projects DISABLE TRIGGER {trigger.get_pgid(Project)}")
    figures = _figures(admin_client)
    assert figures["unhealthy triggers and functions"][0] == "1"
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "projects_on_insert on projects: disabled" in html


def test_support_and_finance_see_the_dashboard(staff_client):
    for user, group in (("sam", "Support"), ("fay", "Finance")):
        page = staff_client(user, group).get(reverse("admin:index"))
        assert page.status_code == 200 and 'id="dashboard"' in page.content.decode()


def test_when_the_report_ran_reads_on_one_line(admin_client):
    """ "last full report #1, just now" (it was the link on a line of its own, then ", 0 minutes ago")."""
    plans_ensure()
    run = discrepancy_report(started_by="cron").run
    html = admin_client.get(reverse("admin:index")).content.decode()
    link = reverse("admin:usage_reconciliationrun_change", args=[run.pk])
    assert f'<a href="{link}" style="display:inline">last full report #{run.pk}</a>, just now' in html
    assert "0\xa0minutes ago" not in html and "0 minutes ago" not in html


def test_after_a_reconciliation_the_findings_figures_come_from_the_last_report_and_say_so(admin_client):
    """A reconciliation over every customer fixes counters and measures no findings: the over-limit and
    stale figures read "—" (not measured) after one, though the report before had measured them. They
    now come from that report, naming it and its age; drift comes from the reconciliation."""
    from billing.ops.integrity import usage_reconcile

    plans_ensure()
    s1 = plant_s1()
    report = discrepancy_report(started_by="cron").run
    apply = usage_reconcile(apply=True, started_by="cron").run
    figures = _figures(admin_client)
    value, link = figures["customers over a limit"]
    assert value == "2" and _listed(admin_client, link) == {s1["six"].email, s1["missing"].email}
    assert figures["stale periods (ended without a rollover)"][0] == "0"
    assert figures["customers with drift"][0] == "0"  # the reconciliation fixed them
    html = admin_client.get(reverse("admin:index")).content.decode()
    report_link = reverse("admin:usage_reconciliationrun_change", args=[report.pk])
    apply_link = reverse("admin:usage_reconciliationrun_change", args=[apply.pk])
    assert (
        f'<a href="{report_link}" style="display:inline">last full report #{report.pk}</a>, just now' in html
    )
    assert f'<a href="{apply_link}" style="display:inline">last full reconciliation #{apply.pk}</a>' in html
