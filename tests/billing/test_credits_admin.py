"""Support's goodwill grant form (SPEC §7, §10): absurd quantities get a form error, never a 500."""

import pytest

from billing.models import AuditLog, CreditGrant
from billing.services.credits import CREDIT_MAX
from tests.factories import CustomerFactory


@pytest.mark.django_db
@pytest.mark.parametrize(
    "metric, granted, error",
    [
        ("minutes", "999999999999999.999", f"more than one grant may hold (less than {CREDIT_MAX:,})"),
        ("minutes", "999,999,999,999,999.999", f"more than one grant may hold (less than {CREDIT_MAX:,})"),
        ("minutes", "1e30", "12.5 (digits, no exponent); not &#x27;1e30&#x27;"),
        ("minutes", "1E+5000", "12.5 (digits, no exponent); not &#x27;1E+5000&#x27;"),
        (
            "minutes",
            "1e3",
            "12.5 (digits, no exponent); not &#x27;1e3&#x27;",
        ),  # was 1,000
        ("ai_interaction", " 2E2 ", "not &#x27;2E2&#x27;"),
        ("minutes", "1e-5000", "positive number with at most 3 decimals"),
        ("minutes", "NaN", "positive number with at most 3 decimals"),
        ("minutes", "-Infinity", "positive number with at most 3 decimals"),
        ("minutes", "9" * 5000, "Ensure this value has at most 40 characters"),
        ("ai_interaction", "2.5", "AI interactions are whole numbers, not 2.5"),
    ],
)
def test_absurd_quantities_are_form_errors_and_write_nothing(staff_client, metric, granted, error):
    customer = CustomerFactory()
    support = staff_client("sam", "Support")
    response = support.post(
        "/admin/billing/creditgrant/add/",
        {"customer": customer.pk, "metric": metric, "granted": granted, "reason": "outage"},
    )
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not CreditGrant.objects.exists() and not AuditLog.objects.exists()


@pytest.mark.django_db
def test_a_grant_just_below_the_bound_is_kept_exact(staff_client):
    customer = CustomerFactory()
    support = staff_client("sam", "Support")
    response = support.post(
        "/admin/billing/creditgrant/add/",
        {"customer": customer.pk, "metric": "minutes", "granted": "999999.500", "reason": "outage"},
    )
    assert response.status_code == 302
    assert str(CreditGrant.objects.get().granted) == "999999.500"


@pytest.mark.django_db
def test_grants_and_plans_read_for_people(staff_client):
    """SPEC §7 / issue 11 finding 5: quantities "1,000.5", not "1000.500"; prices "USD 19.00" and
    allowances "unlimited", not "1900" and "-" (the grants and plans lists showed the raw columns)."""
    from demo.data import plans_ensure

    plans_ensure()
    customer = CustomerFactory()
    support = staff_client("sam", "Support")
    support.post(
        "/admin/billing/creditgrant/add/",
        {"customer": customer.pk, "metric": "minutes", "granted": "1,000.5", "reason": "outage"},
    )
    grant = CreditGrant.objects.get()
    for page in ("/admin/billing/creditgrant/", f"/admin/billing/creditgrant/{grant.pk}/change/"):
        html = support.get(page).content.decode()
        assert "1,000.5" in html and "1000.500" not in html, page
    plans = support.get("/admin/billing/plan/").content.decode()
    assert "USD 19.00" in plans and "USD 199.00" in plans and ">1900<" not in plans
    assert "unlimited" in plans and "50,000" in plans


@pytest.mark.django_db
def test_a_goodwill_grant_that_has_already_expired_is_refused(staff_client):
    customer = CustomerFactory()
    support = staff_client("sam", "Support")
    response = support.post(
        "/admin/billing/creditgrant/add/",
        {
            "customer": customer.pk,
            "metric": "minutes",
            "granted": "5",
            "reason": "x",
            "expires_at_0": "2020-01-01",  # the admin's split date and time widget
            "expires_at_1": "00:00",
        },
    )
    assert response.status_code == 200 and "2020-01-01 00:00 UTC has passed" in response.content.decode()
    assert not CreditGrant.objects.exists() and not AuditLog.objects.exists()
