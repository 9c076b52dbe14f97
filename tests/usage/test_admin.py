"""Admin (SPEC §7 as far as the foundation goes): every model, search by email, counters read-only."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from tests.conftest import active_count
from tests.factories import (
    CustomerFactory,
    PresetFactory,
    PresetUsageFactory,
    ProjectFactory,
    UsageEventFactory,
)
from usage.models import UsageTracking

pytestmark = pytest.mark.django_db

REGISTERED = sorted(
    (m._meta.app_label, m._meta.model_name)
    for m in admin.site._registry
    if m._meta.app_label in ("usage", "billing")
)


def test_every_model_is_registered():
    assert {name for _, name in REGISTERED} >= {
        "customer",
        "project",
        "preset",
        "presetusage",
        "usageevent",
        "usagetracking",
        "plan",
        "subscription",
    }


@pytest.mark.parametrize("app_label, model_name", REGISTERED)
def test_every_changelist_renders(admin_client, app_label, model_name):
    ProjectFactory()
    PresetUsageFactory()
    UsageEventFactory()
    model = apps.get_model(app_label, model_name)
    page = admin_client.get(reverse(f"admin:{app_label}_{model_name}_changelist")).content.decode()
    assert f"Select {model._meta.verbose_name} to" in page  # "to change", or "to view" for read-only data
    assert ('id="result_list"' in page) is model.objects.exists()  # its rows, when it has any


def test_support_finds_a_customer_by_email_in_any_case(admin_client):
    wanted = CustomerFactory(email="Jane.Doe@Example.com")
    CustomerFactory(email="someone@example.com")
    url = reverse("admin:usage_customer_changelist")
    for term in ("jane.doe@example.com", "JANE.DOE@EXAMPLE.COM", "jane.d", str(wanted.pk)):
        page = admin_client.get(url, {"q": term}).content.decode()
        assert "Jane.Doe@Example.com" in page, term
        assert "someone@example.com" not in page, term


def test_customer_page_shows_counters_and_none_is_editable(admin_client):
    customer = CustomerFactory()
    ProjectFactory.create_batch(2, customer=customer)
    PresetUsageFactory(preset=PresetFactory(customer=customer, name="Show notes"))
    page = admin_client.get(reverse("admin:usage_customer_change", args=[customer.pk])).content.decode()
    assert "Usage periods (counters, maintained by triggers)" in page
    assert 'name="usage_periods-0-active_projects_count"' not in page
    assert 'name="presets-0-usage_count"' not in page
    assert "Show notes" in page


def test_posting_a_counter_value_changes_nothing(admin_client):
    preset = PresetFactory(name="Old name")
    PresetUsageFactory.create_batch(2, preset=preset)
    response = admin_client.post(
        reverse("admin:usage_preset_change", args=[preset.pk]),
        {"customer": preset.customer_id, "name": "New name", "usage_count": 999, "last_used_at": ""},
    )
    assert (response.status_code, response.url) == (302, reverse("admin:usage_preset_changelist"))
    preset.refresh_from_db()
    assert (preset.name, preset.usage_count) == ("New name", 2)


def test_usage_periods_cannot_be_added_changed_or_deleted(admin_client):
    customer = CustomerFactory()
    ProjectFactory(customer=customer)
    row = UsageTracking.objects.get(customer=customer)
    for response in (
        admin_client.get(reverse("admin:usage_usagetracking_add")),
        admin_client.post(reverse("admin:usage_usagetracking_delete", args=[row.pk]), {"post": "yes"}),
        admin_client.post(
            reverse("admin:usage_usagetracking_change", args=[row.pk]), {"active_projects_count": 50}
        ),
    ):
        assert response.status_code == 403 and "403 Forbidden" in response.content.decode()
    assert UsageTracking.objects.filter(pk=row.pk).exists()
    assert active_count(customer) == 1


def test_archiving_a_project_in_the_admin_moves_the_counter(admin_client):
    project = ProjectFactory()
    response = admin_client.post(
        reverse("admin:usage_project_change", args=[project.pk]),
        {"customer": project.customer_id, "name": project.name, "status": "archived"},
    )
    assert (response.status_code, response.url) == (302, reverse("admin:usage_project_changelist"))
    assert active_count(project.customer) == 0


def test_bad_input_in_a_form_is_refused_and_writes_nothing(admin_client):
    customer = CustomerFactory(email="keep@example.com")
    response = admin_client.post(
        reverse("admin:usage_customer_change", args=[customer.pk]),
        {
            "email": "not an email",
            "name": "x",
            "usage_periods-TOTAL_FORMS": 0,
            "usage_periods-INITIAL_FORMS": 0,
            "presets-TOTAL_FORMS": 0,
            "presets-INITIAL_FORMS": 0,
        },
    )
    assert "Enter a valid email address." in response.content.decode()
    customer.refresh_from_db()
    assert customer.email == "keep@example.com"
    response = admin_client.post(
        reverse("admin:usage_project_change", args=[ProjectFactory(customer=customer).pk]),
        {"customer": customer.pk, "name": "p", "status": "deleted"},
    )
    assert "Select a valid choice" in response.content.decode()
    assert active_count(customer) == 1


def test_customer_changelist_query_count_does_not_grow_with_rows(admin_client, django_assert_max_num_queries):
    CustomerFactory.create_batch(60)
    # session, user, the page, the plan filter's choices, the page's usage and over-limit findings ...
    with django_assert_max_num_queries(9):
        page = admin_client.get(reverse("admin:usage_customer_changelist")).content.decode()
    assert page.count('class="action-select"') == 50  # one page of the 60


@pytest.mark.parametrize(
    "model_name",
    ["project", "usageevent", "usagetracking", "preset", "presetusage", "subscription", "creditgrant"],
)
def test_big_lists_are_searched_by_their_customer_through_indexes(admin_client, model_name):
    """By the customer's email (any case), an email prefix or a customer id; the admin's own search was
    an ILIKE '%term%' over every row joined to customers, seconds at 20M usage events (bench/admin.py)."""
    from billing.models import CreditGrant, Plan, Subscription

    plan = Plan.objects.create(code="free", name="Free", price=0)
    rows = {}
    for email in ("Jane.Doe@Example.com", "someone@example.com"):
        customer = CustomerFactory(email=email)
        ProjectFactory(customer=customer)
        PresetUsageFactory(preset=PresetFactory(customer=customer), customer=customer)
        UsageEventFactory(customer=customer)
        Subscription.objects.create(
            customer=customer,
            plan=plan,
            current_period_start=customer.current_period_start,
            current_period_end=customer.current_period_end,
        )
        CreditGrant.objects.create(
            customer=customer, metric="minutes", granted=5, source="purchase", created_by="t"
        )
        rows[email] = customer
    app = "billing" if model_name in ("subscription", "creditgrant") else "usage"
    url = reverse(f"admin:{app}_{model_name}_changelist")
    jane = rows["Jane.Doe@Example.com"]
    for term in ("jane.doe@example.com", "JANE.DOE@EXAMPLE.COM", "jane.d", str(jane.pk)):
        page = admin_client.get(url, {"q": term}).content.decode()
        assert "1 result" in page and "someone@example.com" not in page, (term, page[-3000:])
    assert "0 results" in admin_client.get(url, {"q": "nobody@example.com"}).content.decode()


def test_a_subscription_is_found_by_the_processors_ids_in_both_lists(admin_client):
    from billing.models import Plan, Subscription

    plan = Plan.objects.create(code="free", name="Free", price=0)
    for i, email in enumerate(("paid@example.com", "other@example.com")):
        customer = CustomerFactory(email=email)
        Subscription.objects.create(
            customer=customer,
            plan=plan,
            processor="stripe",
            external_subscription_id=f"sub_{i}",
            external_customer_id=f"cus_{i}",
            current_period_start=customer.current_period_start,
            current_period_end=customer.current_period_end,
        )
    for name in ("usage_customer", "billing_subscription"):
        for term in ("sub_0", "cus_0"):
            page = admin_client.get(reverse(f"admin:{name}_changelist"), {"q": term}).content.decode()
            assert "paid@example.com" in page and "other@example.com" not in page, (name, term)
