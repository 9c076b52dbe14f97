"""Plan-change validation (SPEC §5, S7): the exact remedy, warnings, upgrades, overrides, audit."""

import json

import pytest
from django.urls import reverse

from billing.models import AuditLog, Subscription
from billing.services.plans import (
    BLOCK_ACTIVE_PROJECTS,
    OVERRIDE_NEEDS_SUPERUSER,
    PlanChangeBlocked,
    plan_change_validate,
    subscription_change_plan,
)
from demo.data import plans_ensure
from tests.conftest import plant_s1, run_manage
from tests.factories import CustomerFactory, ProjectFactory, UsageEventFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def plans():
    return plans_ensure()


@pytest.fixture
def growth_customer(plans):
    customer = CustomerFactory()
    customer.refresh_from_db()
    Subscription.objects.create(
        customer=customer,
        plan=plans["growth"],
        current_period_start=customer.current_period_start,
        current_period_end=customer.current_period_end,
    )
    ProjectFactory.create_batch(5, customer=customer)
    return customer


def test_s7_downgrade_blocked_with_the_exact_remedy_then_allowed_after_archiving(growth_customer, plans):
    result = plan_change_validate(customer=growth_customer, target=plans["starter"])
    assert not result.allowed and result.direction == "downgrade"
    assert result.blocks == [
        "Archive 2 projects before moving to Starter: it allows 3, the customer has 5 active."
    ]
    assert result.blocks[0] == BLOCK_ACTIVE_PROJECTS.format(
        excess=2, s="s", plan="Starter", limit=3, active=5
    )
    for project in growth_customer.projects.all()[:2]:
        project.status = "archived"
        project.save()
    assert plan_change_validate(customer=growth_customer, target=plans["starter"]).allowed


def test_metered_usage_above_the_target_is_a_warning_and_upgrades_always_pass(growth_customer, plans):
    UsageEventFactory(customer=growth_customer, quantity=700)
    growth_customer.projects.update(status="archived")
    result = plan_change_validate(customer=growth_customer, target=plans["starter"])
    assert result.allowed
    assert result.warnings == [
        "AI interactions this period: 700 used, above Starter's allowance of 500; the change is allowed, and "
        "Starter's limit applies from now on."
    ]
    assert plan_change_validate(customer=growth_customer, target=plans["pro"]).direction == "upgrade"
    assert plan_change_validate(customer=growth_customer, target=plans["pro"]).allowed


def test_the_verdict_reads_numbers_for_people(growth_customer, plans):
    """Thousands separators in the verdict (it said "1108 used", walking the tour's step 7)."""
    UsageEventFactory(customer=growth_customer, quantity=1108)
    growth_customer.projects.update(status="archived")
    result = plan_change_validate(customer=growth_customer, target=plans["starter"])
    assert result.warnings[0].startswith("AI interactions this period: 1,108 used, above Starter's allowance")


def test_a_customer_over_its_limit_can_still_upgrade(plans):
    """Upgrades are always allowed (SPEC §5), even to a plan whose limit the customer still exceeds."""
    six = plant_s1()["six"]  # Free (1 project) with 6 active projects
    result = plan_change_validate(customer=six, target=plans["starter"])  # Starter allows 3: still over
    assert (result.direction, result.allowed, result.blocks, result.warnings) == ("upgrade", True, [], [])
    subscription_change_plan(
        customer=six, target=plans["starter"], actor="sam (admin)"
    )  # support, no override
    assert Subscription.objects.get(customer=six, status="active").plan == plans["starter"]
    row = AuditLog.objects.get(action="plan_change")
    assert (row.actor, row.before, row.after["plan"], row.reason) == (
        "sam (admin)",
        {"plan": "free"},
        "starter",
        "upgrade validated",
    )


def test_change_plan_refuses_when_blocked_and_a_superuser_override_is_audited(growth_customer, plans):
    with pytest.raises(PlanChangeBlocked, match="Archive 2 projects"):
        subscription_change_plan(customer=growth_customer, target=plans["starter"], actor="sam (admin)")
    with pytest.raises(PlanChangeBlocked, match=OVERRIDE_NEEDS_SUPERUSER):
        subscription_change_plan(
            customer=growth_customer,
            target=plans["starter"],
            actor="sam (admin)",
            override_reason="asked nicely",
        )
    assert Subscription.objects.get(customer=growth_customer).plan.code == "growth"
    assert not AuditLog.objects.exists()
    subscription_change_plan(
        customer=growth_customer,
        target=plans["starter"],
        actor="root (admin)",
        override_reason="contract signed, projects archived by Friday",
        is_superuser=True,
    )
    assert Subscription.objects.get(customer=growth_customer).plan.code == "starter"
    row = AuditLog.objects.get()
    assert (row.action, row.before, row.after["plan"]) == ("plan_change", {"plan": "growth"}, "starter")
    assert row.reason.startswith("OVERRIDE of a blocked downgrade") and "contract signed" in row.reason


@pytest.mark.django_db(transaction=True)
def test_command_exit_codes_and_bad_input(growth_customer, plans):
    blocked = run_manage("validate_plan_change", growth_customer.email, "--to", "starter", "--format", "json")
    assert blocked.returncode == 1
    assert json.loads(blocked.stdout)["blocks"] == [
        "Archive 2 projects before moving to Starter: it allows 3, the customer has 5 active."
    ]
    assert run_manage("validate_plan_change", growth_customer.email, "--to", "PRO").returncode == 0
    for args, message in (
        (["validate_plan_change", growth_customer.email, "--to", "platinum"], "no plan 'platinum'"),
        (["validate_plan_change", "nobody@example.com", "--to", "starter"], "no customer with email or id"),
        (["validate_plan_change", growth_customer.email], "the following arguments are required: --to"),
    ):
        result = run_manage(*args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_admin_validates_a_selection_and_support_cannot_override(growth_customer, plans, staff_client):
    other = CustomerFactory()
    client = staff_client("sam", "Support")
    url = reverse("admin:usage_customer_changelist")
    ids = [str(growth_customer.pk), str(other.pk)]
    page = client.post(
        url, {"action": "validate_plan_change_action", "_selected_action": ids, "plan": "starter"}
    ).content.decode()
    assert "2 customers checked against Starter: 1 blocked." in page
    assert "Archive 2 projects before moving to Starter" in page
    no_plan = client.post(
        url, {"action": "validate_plan_change_action", "_selected_action": ids, "plan": ""}, follow=True
    )
    assert "Choose the target plan" in no_plan.content.decode()
    changed = client.post(
        url,
        {"action": "change_plan_action", "_selected_action": ids, "plan": "starter", "reason": "please"},
        follow=True,
    )
    html = changed.content.decode()
    assert "Moved 1 customer to Starter." in html and OVERRIDE_NEEDS_SUPERUSER in html
    assert Subscription.objects.get(customer=growth_customer).plan.code == "growth"
    assert Subscription.objects.get(customer=other).plan.code == "starter"
