"""Pages and messages say things in words (issue 11: "project(s)", codes like "over_limit" shown to
people, "1e3" taken as a quantity); commands keep the codes in their JSON output."""

import io
import json
import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from billing.ops.integrity import discrepancy_report
from demo.data import plans_ensure
from tests.conftest import plant_s1
from tests.factories import CustomerFactory
from usage.models import UsageEvent
from usage.numbers import count_of

pytestmark = pytest.mark.django_db


def _text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", response.content.decode()))


def test_count_of_says_how_many_in_words():
    assert count_of(1, "project") == "1 project"
    assert count_of(5, "project") == "5 projects"
    assert count_of(0, "customer") == "0 customers"
    assert count_of(1200, "event") == "1,200 events"


def test_the_customer_page_names_its_findings_in_words(admin_client):
    plans_ensure()
    six = plant_s1()["six"]
    discrepancy_report(started_by="test", customer_ids=[six.pk], scope="one")
    page = _text(admin_client.get(reverse("admin:usage_customer_change", args=[six.pk])))
    assert "Over a limit: 6 / 1 active projects (600 %) on Free" in page
    assert "Over a limit: archive 5 projects or move to a bigger plan" in page
    assert "over_limit" not in page and "project(s)" not in page


def test_one_project_over_is_one_project():
    plans_ensure()
    missing = plant_s1()["missing"]  # 2 active projects on Free (1 allowed)
    found = [f for f in discrepancy_report(started_by="test").findings if f.customer_id == str(missing.pk)]
    assert [f.fix for f in found if f.check == "over_limit"] == ["archive 1 project or move to a bigger plan"]


def test_the_report_action_names_findings_in_words(admin_client):
    plans_ensure()
    s1 = plant_s1()
    response = admin_client.post(
        reverse("admin:usage_customer_changelist"),
        {"action": "discrepancy_report_action", "_selected_action": [str(s1["six"].pk)]},
    )
    page = _text(response)
    assert "Over a limit" in page and "over_limit" not in page and "project(s)" not in page


def test_the_reconcile_message_counts_in_words(admin_client):
    plans_ensure()
    phantom = plant_s1()["phantom"]
    response = admin_client.post(
        reverse("admin:usage_customer_changelist"),
        {"action": "reconcile_action", "_selected_action": [str(phantom.pk)], "confirm": "yes"},
        follow=True,
    )
    page = _text(response)
    assert "Set 1 counter of 1 customer to the truth" in page, page[:3000]
    assert "(s)" not in page


def test_commands_keep_the_codes_in_json():
    plans_ensure()
    plant_s1()
    out = io.StringIO()
    call_command("usage_discrepancies", "--format", "json", stdout=out)
    assert {f["check"] for f in json.loads(out.getvalue())["findings"]} >= {"over_limit"}


@pytest.mark.parametrize("typed", ["1e3", "2E+2", " 1e1 ", "NaN"])
def test_a_usage_event_quantity_must_be_a_plain_number(admin_client, typed):
    """Django's DecimalField read "1e3" as 1,000: the admin's quantity fields take digits only."""
    customer = CustomerFactory()
    response = admin_client.post(
        reverse("admin:usage_usageevent_add"),
        {
            "customer": customer.pk,
            "metric": "minutes",
            "quantity": typed,
            "occurred_at_0": "2026-12-01",
            "occurred_at_1": "10:00:00",
            "reason": "adjustment",
        },
    )
    assert response.status_code == 200
    assert "is not a plain number: write it with digits and at most one decimal point" in _text(response)
    assert not UsageEvent.objects.filter(customer=customer).exists()


def test_the_audit_names_metrics_and_codes_in_words():
    from billing.services.audit import audit_changes

    lines = audit_changes({}, {"metric": "ai_interaction", "source": "goodwill", "status": "past_due"})
    assert lines == ["metric: AI interactions", "source: goodwill", "status: past due"]
