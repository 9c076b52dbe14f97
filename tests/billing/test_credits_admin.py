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
        ("minutes", "1e30", f"more than one grant may hold (less than {CREDIT_MAX:,})"),  # was a 500
        ("minutes", "1E+5000", f"more than one grant may hold (less than {CREDIT_MAX:,})"),  # was a 500
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
