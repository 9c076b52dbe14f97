"""Roles as groups (SPEC §7): Finance reads and changes nothing; Support holds exactly its fixes.

The groups are made by the role migrations (the ``roles`` fixture runs the same functions); their
permissions are pinned here, so a permission slipping into a group is a failing test, not a surprise.
"""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.urls import reverse

from tests.factories import CustomerFactory, ProjectFactory
from usage.models import Customer, Project

pytestmark = pytest.mark.django_db

FINANCE = {
    "billing.view_auditlog",
    "billing.view_creditdraw",
    "billing.view_creditgrant",
    "billing.view_plan",
    "billing.view_subscription",
    "billing.view_webhookevent",
    "usage.view_customer",
    "usage.view_preset",
    "usage.view_presetusage",
    "usage.view_project",
    "usage.view_reconciliationrow",
    "usage.view_reconciliationrun",
    "usage.view_usageevent",
    "usage.view_usagetracking",
}
SUPPORT = FINANCE | {
    "billing.add_creditgrant",
    "billing.change_subscription",
    "billing.replay_webhookevent",
    "usage.change_customer",
    "usage.change_project",
    "usage.reconcile_selection",
}


def permissions(group: str) -> set[str]:
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Group.objects.get(name=group).permissions.select_related("content_type")
    }


def test_the_finance_group_holds_view_permissions_only(roles):
    assert permissions("Finance") == FINANCE
    assert all(p.split(".")[1].startswith("view_") for p in permissions("Finance"))


def test_the_support_group_holds_exactly_its_fixes(roles):
    assert permissions("Support") == SUPPORT


def test_finance_can_add_change_or_delete_nothing_on_any_admin_page(django_user_model, roles):
    user = django_user_model.objects.create_user("fay", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Finance"))
    request = RequestFactory().get("/admin/")
    request.user = user
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label
        assert not model_admin.has_add_permission(request), label
        assert not model_admin.has_change_permission(request), label
        assert not model_admin.has_delete_permission(request), label
        actions = set(model_admin.get_actions(request))
        # The two read-only actions: a report of the selection, and a plan-change check (writes nothing).
        expected = (
            {"discrepancy_report_action", "validate_plan_change_action"} if model is Customer else set()
        )
        assert actions == expected, label


def test_finance_sees_a_customer_without_a_save_button_and_its_posts_change_nothing(staff_client):
    customer = CustomerFactory(email="keep@example.com", name="Keep Ltd")
    project = ProjectFactory(customer=customer, name="kept")
    finance = staff_client("fay", "Finance")
    url = reverse("admin:usage_customer_change", args=[customer.pk])
    page = finance.get(url).content.decode()
    assert "View customer" in page and "keep@example.com" in page
    assert 'name="_save"' not in page
    response = finance.post(url, {"email": "taken@example.com", "name": "Taken"})
    assert response.status_code == 403
    response = finance.post(
        reverse("admin:usage_project_change", args=[project.pk]),
        {"customer": customer.pk, "name": "renamed", "status": "archived"},
    )
    assert response.status_code == 403
    assert Customer.objects.filter(pk=customer.pk, email="keep@example.com", name="Keep Ltd").exists()
    assert Project.objects.filter(pk=project.pk, name="kept", status="active").exists()
