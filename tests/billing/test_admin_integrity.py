"""The integrity tools from the admin (SPEC §7): S1 end to end, roles, confirmation first."""

import re

import pytest
from django.db import connection
from django.urls import reverse

from billing.ops.findings import findings
from tests.conftest import active_count, plant_s1
from usage.models import ReconciliationRun, UsageTracking
from usage.numbers import count_of

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:usage_customer_changelist"


@pytest.fixture
def support_client(staff_client):
    return staff_client("sam", "Support")


@pytest.fixture
def finance_client(staff_client):
    return staff_client("fay", "Finance")


def test_s1_from_the_admin_report_then_confirm_then_reconcile(support_client):
    # Usage rows with ids no count on the page can equal (1 and 2 collided with "2 active projects"
    # whenever this test ran first against a fresh sequence).
    with connection.cursor() as cursor:
        cursor.execute("SELECT setval(pg_get_serial_sequence('usage_tracking', 'id'), 900000)")
    s1 = plant_s1()
    ids = [str(c.pk) for c in s1.values()]
    page = support_client.post(
        reverse(CHANGELIST), {"action": "discrepancy_report_action", "_selected_action": ids}
    )
    html = page.content.decode()
    assert page.status_code == 200 and "Discrepancy report" in html
    assert "drifted counters: 3" in html and "(no row)" in html
    # For people (SPEC §7; issue 11 finding 5): the counter in words, a signed difference, never the
    # usage row's internal id (the report showed "active_projects … 602 … 3 0 -3").
    row_ids = {str(pk) for pk in UsageTracking.objects.values_list("pk", flat=True)}
    cells = set(re.findall(r"<td>([^<]*)</td>", html))
    assert not cells & row_ids
    assert "<td>active projects</td>" in html and "active_projects" not in re.sub(r'"[^"]*"', "", html)
    assert "<td>−3</td>" in html and "<td>+2</td>" in html

    confirm = support_client.post(
        reverse(CHANGELIST), {"action": "reconcile_action", "_selected_action": ids}
    )
    html = confirm.content.decode()
    assert "Yes, set these counters" in html and "Will be set to" in html
    assert active_count(s1["six"]) == 0  # nothing written before the confirmation

    done = support_client.post(
        reverse(CHANGELIST), {"action": "reconcile_action", "_selected_action": ids, "confirm": "yes"}
    )
    run = ReconciliationRun.objects.filter(mode="apply").get()
    assert done.status_code == 302 and done.url == reverse(
        "admin:usage_reconciliationrun_change", args=[run.pk]
    )
    assert (run.fixed, run.started_by) == (3, "sam (admin)")
    assert (active_count(s1["six"]), active_count(s1["phantom"]), active_count(s1["missing"])) == (6, 0, 2)

    customer_page = support_client.get(
        reverse("admin:usage_customer_change", args=[s1["six"].pk])
    ).content.decode()
    assert "6 / 1 active projects (600 %) on Free" in customer_page
    assert "DRIFT" not in customer_page


def test_customer_page_flags_drift_and_recount_fixes_it(support_client):
    s1 = plant_s1()
    url = reverse("admin:usage_customer_change", args=[s1["six"].pk])
    html = support_client.get(url).content.decode()
    assert "DRIFT +6" in html and 'id="recount-button"' in html
    assert "manage.py reconcile_usage --apply --customer" in html  # the fix, spelled out
    response = support_client.post(reverse("admin:usage_customer_recount", args=[s1["six"].pk]), follow=True)
    assert "1 counter set to the truth" in response.content.decode()
    assert active_count(s1["six"]) == 6
    assert active_count(s1["phantom"]) == 3  # only that customer


def test_recount_refuses_get_and_users_without_the_permission(support_client, finance_client):
    s1 = plant_s1()
    recount = reverse("admin:usage_customer_recount", args=[s1["six"].pk])
    assert support_client.get(recount).status_code == 405
    assert finance_client.post(recount).status_code == 403
    html = finance_client.get(reverse("admin:usage_customer_change", args=[s1["six"].pk])).content.decode()
    assert 'id="recount-button"' not in html and "DRIFT +6" in html  # finance sees, cannot fix
    actions = finance_client.get(reverse(CHANGELIST)).content.decode()
    assert "discrepancy_report_action" in actions and "reconcile_action" not in actions
    forced = finance_client.post(
        reverse(CHANGELIST),
        {"action": "reconcile_action", "_selected_action": [str(s1["six"].pk)], "confirm": "yes"},
    )
    assert (forced.status_code, forced.url) == (
        302,
        reverse(CHANGELIST),
    )  # the action is not Finance's: refused
    assert "No action selected." in finance_client.get(forced.url).content.decode()
    assert active_count(s1["six"]) == 0 and not ReconciliationRun.objects.filter(mode="apply").exists()


def test_recount_of_an_unknown_customer_redirects_and_writes_nothing(support_client):
    response = support_client.post(
        reverse("admin:usage_customer_recount", args=["ffffffff-ffff-ffff-ffff-ffffffffffff"]), follow=True
    )
    assert response.redirect_chain == [(reverse("admin:index"), 302)]
    assert (
        "Customer with ID “ffffffff-ffff-ffff-ffff-ffffffffffff” doesn’t exist. Perhaps it was deleted?"
        in response.content.decode()
    )
    assert not ReconciliationRun.objects.exists()


def test_run_history_pages_filter_by_check_and_customer(admin_client):
    s1 = plant_s1()
    admin_client.post(reverse("admin:usage_customer_recount", args=[s1["six"].pk]))
    run = ReconciliationRun.objects.get()
    runs = admin_client.get(reverse("admin:usage_reconciliationrun_changelist")).content.decode()
    assert (
        "admin (admin)" in runs
        and s1["six"].email in runs
        and f">{count_of(run.discrepancies, 'row')}</a>" in runs
    )
    page = admin_client.get(reverse("admin:usage_reconciliationrun_change", args=[run.pk])).content.decode()
    assert "View reconciliation run" in page and s1["six"].email in page and "admin (admin)" in page
    rows = reverse("admin:usage_reconciliationrow_changelist")
    assert s1["six"].email in admin_client.get(rows, {"check_name": "active_projects"}).content.decode()
    assert s1["six"].email in admin_client.get(rows, {"q": s1["six"].email}).content.decode()
    assert s1["six"].email not in admin_client.get(rows, {"q": "someone-else@example.com"}).content.decode()


def test_actions_with_nothing_selected_write_nothing(support_client):
    plant_s1()
    for action in ("discrepancy_report_action", "reconcile_action"):
        response = support_client.post(
            reverse(CHANGELIST), {"action": action, "index": "0", "confirm": "yes"}, follow=True
        )
        assert "Items must be selected in order to perform actions on them." in response.content.decode()
    assert not ReconciliationRun.objects.exists()


def test_findings_come_from_the_truth_not_the_drifted_counter(support_client):
    """Issue 11 finding 4: the S1 phantom customer (3 tracked, 0 active) was told to archive 2 projects;
    the customer with 6 active projects and a counter of 0, and the one with no period row, were not
    told they are over their limit."""
    s1 = plant_s1()
    ids = [str(c.pk) for c in s1.values()]
    over = {f.email: f.detail for f in findings(ids) if f.check == "over_limit"}
    assert over == {
        s1["six"].email: "6 / 1 active projects (600 %) on Free",
        s1["missing"].email: "2 / 1 active projects (200 %) on Free",  # no period row: still over
    }
    for action in ("discrepancy_report_action", "reconcile_action"):
        html = support_client.post(reverse(CHANGELIST), {"action": action, "_selected_action": ids}).content
        html = html.decode()
        assert "6 / 1 active projects (600 %) on Free" in html, action
        assert "3 / 1" not in html and "archive 2 project" not in html, action
    phantom = support_client.get(reverse("admin:usage_customer_change", args=[s1["phantom"].pk]))
    assert "over_limit" not in phantom.content.decode() and "archive 2" not in phantom.content.decode()
