"""Every admin list, filtered and posted to as an attacker would: no 500 (SPEC §10).

Before billing/admin_input.py, a NUL character in any generic list filter's value and an action
posted on a selection of ids that are not the model's keys answered 500 on every list.
"""

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from django.urls import reverse

from billing.admin_input import NUL_CHARACTER
from billing.models import AuditLog, WebhookEvent
from demo.data import plans_ensure
from tests.factories import CustomerFactory, ProjectFactory
from usage.models import Customer, Project, UsageTracking

pytestmark = pytest.mark.django_db


def _changelists():
    for model, model_admin in admin.site._registry.items():
        yield reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"), model_admin


def _filter_parameters(model_admin):
    for list_filter in model_admin.list_filter:
        if isinstance(list_filter, str):
            yield from (list_filter, f"{list_filter}__in")
        elif isinstance(list_filter, tuple):
            yield list_filter[0]
        else:
            yield list_filter.parameter_name


@pytest.fixture
def superuser_client(admin_user):
    plans_ensure()
    ProjectFactory(customer=CustomerFactory())
    client = Client()
    client.force_login(admin_user)
    return client


def test_a_nul_character_in_any_list_filter_is_a_400_or_handled(superuser_client):
    refused = []
    for url, model_admin in _changelists():
        for parameter in ["q", *_filter_parameters(model_admin)]:
            response = superuser_client.get(url, {parameter: "\x00"})
            assert response.status_code in (200, 302, 400), (url, parameter, response.status_code)
            if response.status_code == 400:
                assert response.content.decode() == NUL_CHARACTER
                refused.append((url, parameter))
    assert ("/admin/billing/webhookevent/", "status") in refused  # one that was a 500


def test_an_action_on_ids_that_are_not_keys_is_a_400_and_changes_nothing(superuser_client, admin_user):
    request = RequestFactory().get("/")
    request.user = admin_user
    before = (
        Customer.objects.count(),
        Project.objects.count(),
        UsageTracking.objects.count(),
        AuditLog.objects.count(),
        User.objects.count(),
        WebhookEvent.objects.count(),
    )
    tried = 0
    for url, model_admin in _changelists():
        for action in model_admin.get_actions(request):
            for value in ("zzz", "\x00") if action == "delete_selected" else ("zzz",):
                response = superuser_client.post(
                    url, {"action": action, "_selected_action": [value], "index": 0}
                )
                assert response.status_code == 400, (url, action, value, response.status_code)
                assert response.content.decode().startswith("Bad request: the selection holds")
                tried += 1
    assert tried >= 20
    after = (
        Customer.objects.count(),
        Project.objects.count(),
        UsageTracking.objects.count(),
        AuditLog.objects.count(),
        User.objects.count(),
        WebhookEvent.objects.count(),
    )
    assert after == before


def test_an_action_on_real_ids_still_runs(superuser_client):
    project = Project.objects.get()
    response = superuser_client.post(
        "/admin/usage/project/",
        {"action": "delete_selected", "_selected_action": [str(project.pk)], "index": 0},
    )
    assert response.status_code == 200 and b"Are you sure" in response.content


def test_a_nul_in_a_plan_changes_reason_is_a_400_and_changes_nothing(superuser_client):
    """The plan page's reason went into the audit row's jsonb, which refused it: a 500 (so did the ORM's
    text column before). The list's action validates its reason in Django's action form."""
    customer = Customer.objects.get()
    response = superuser_client.post(
        f"/admin/usage/customer/{customer.pk}/plan/", {"to": "pro", "reason": "launch\x00"}
    )
    assert response.status_code == 400 and response.content.decode() == NUL_CHARACTER
    assert not AuditLog.objects.exists() and not customer.subscriptions.exists()


@pytest.mark.parametrize("month", ["9999-12", "0001-01", "2000-01"])
def test_a_month_at_the_calendars_edge_in_any_list_filter_is_no_500(superuser_client, month):
    """?month=9999-12 on the usage events list was a 500: the month's end (start + 32 days) is past the
    calendar. Every list and every filter gets the calendar's first and last month."""
    for url, model_admin in _changelists():
        for parameter in _filter_parameters(model_admin):
            response = superuser_client.get(url, {parameter: month})
            assert response.status_code in (200, 302, 400), (url, parameter, response.status_code)
