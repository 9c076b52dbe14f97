"""Plan limits hold in the admin too (SPEC §7 Support, issue 11 finding 3).

Projects › Add, un-archiving a project and moving one to another customer all go through the project
service: past the plan's active-projects limit the form is refused with the remedy and nothing is
written, unless a superuser overrides with a reason, which is audited.
"""

import pytest
from django.test import Client
from django.urls import reverse

from billing.models import AuditLog, Subscription
from demo.data import plans_ensure
from tests.factories import CustomerFactory, ProjectFactory
from tests.referee import assert_invariants
from usage.models import Project

pytestmark = pytest.mark.django_db

REFUSAL = "Cannot {verb}: 3 of 3 active projects on Starter. Archive or delete a project, or upgrade to Growth (10)."


@pytest.fixture
def at_limit():
    """The S8 customer: Starter (3 active projects), at 3/3, plus one archived project."""
    plans = plans_ensure()
    customer = CustomerFactory(email="s8@example.com")
    Subscription.objects.create(
        customer=customer,
        plan=plans["starter"],
        current_period_start=customer.current_period_start,
        current_period_end=customer.current_period_end,
    )
    ProjectFactory.create_batch(3, customer=customer)
    archived = ProjectFactory(customer=customer, name="old", status=Project.Status.ARCHIVED)
    return customer, archived


@pytest.fixture
def superuser_client(django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def _active(customer) -> int:
    return Project.objects.filter(customer=customer, status="active").count()


def _errors(response) -> list[str]:
    assert response.status_code == 200, response.status_code  # the form again, not a redirect
    return list(response.context["adminform"].form.non_field_errors())


def _change(client, project, **changes):
    data = {"customer": project.customer_id, "name": project.name, "status": project.status, **changes}
    return client.post(reverse("admin:usage_project_change", args=[project.pk]), data)


def test_support_cannot_unarchive_past_the_limit(staff_client, at_limit):
    customer, archived = at_limit
    support = staff_client("sam", "Support")
    response = _change(support, archived, status="active")
    assert _errors(response) == [REFUSAL.format(verb="un-archive the project")]
    archived.refresh_from_db()
    assert archived.status == "archived" and _active(customer) == 3
    assert not AuditLog.objects.filter(action="project_limit_override").exists()
    assert_invariants([customer.pk])


def test_support_cannot_move_a_project_onto_a_customer_at_the_limit(staff_client, at_limit):
    customer, _ = at_limit
    plans_ensure()
    elsewhere = ProjectFactory(name="elsewhere")  # its customer is on Free (1 project), at 1/1
    support = staff_client("sam", "Support")
    response = _change(support, elsewhere, customer=customer.pk)
    assert _errors(response) == [REFUSAL.format(verb="move the project to s8@example.com")]
    elsewhere.refresh_from_db()
    assert elsewhere.customer_id != customer.pk and _active(customer) == 3
    assert_invariants([customer.pk, elsewhere.customer_id])


def test_support_may_rename_archive_and_move_archived_projects_at_the_limit(staff_client, at_limit):
    customer, archived = at_limit
    support = staff_client("sam", "Support")
    active = Project.objects.filter(customer=customer, status="active").first()
    assert _change(support, active, name="renamed").status_code == 302
    other = ProjectFactory(name="archived elsewhere", status="archived")
    assert _change(support, other, customer=customer.pk).status_code == 302  # archived: adds nothing
    assert _change(support, active, status="archived").status_code == 302
    assert _change(support, archived, status="active").status_code == 302  # 2/3 now: fits
    assert _active(customer) == 3
    assert_invariants([customer.pk])


def test_support_reason_is_no_override(staff_client, at_limit):
    customer, archived = at_limit
    support = staff_client("sam", "Support")
    response = _change(support, archived, status="active", override_reason="customer asked nicely")
    assert _errors(response) == [
        REFUSAL.format(verb="un-archive the project")
        + " Only a superuser can go past a plan's project limit."
    ]
    assert _active(customer) == 3


def test_add_past_the_limit_refused_even_for_a_superuser_without_a_reason(superuser_client, at_limit):
    customer, _ = at_limit
    response = superuser_client.post(
        reverse("admin:usage_project_add"), {"customer": customer.pk, "name": "fourth", "status": "active"}
    )
    assert _errors(response) == [
        REFUSAL.format(verb="create a project") + " A superuser can override with a reason."
    ]
    assert not Project.objects.filter(name="fourth").exists()


def test_a_superuser_overrides_with_a_reason_and_it_is_audited(superuser_client, at_limit):
    customer, archived = at_limit
    response = superuser_client.post(
        reverse("admin:usage_project_add"),
        {
            "customer": customer.pk,
            "name": "fourth",
            "status": "active",
            "override_reason": "contract clause 4",
        },
    )
    assert response.status_code == 302
    response = _change(superuser_client, archived, status="active", override_reason="migration weekend")
    assert response.status_code == 302
    assert _active(customer) == 5
    audit = list(
        AuditLog.objects.filter(action="project_limit_override")
        .order_by("at", "id")
        .values_list("reason", "actor")
    )
    assert audit == [
        (f"OVERRIDE ({REFUSAL.format(verb='create a project')}): contract clause 4", "root (admin)"),
        (
            "OVERRIDE (Cannot un-archive the project: 4 of 3 active projects on Starter. "
            "Archive or delete a project, or upgrade to Growth (10).): migration weekend",
            "root (admin)",
        ),
    ]
    assert_invariants([customer.pk])


def test_add_under_the_limit_and_archived_adds_pass(superuser_client):
    plans_ensure()
    customer = CustomerFactory()  # Free: 1 project
    add = reverse("admin:usage_project_add")
    assert (
        superuser_client.post(add, {"customer": customer.pk, "name": "a", "status": "active"}).status_code
        == 302
    )
    assert (
        superuser_client.post(add, {"customer": customer.pk, "name": "b", "status": "archived"}).status_code
        == 302
    )
    response = superuser_client.post(add, {"customer": customer.pk, "name": " ", "status": "active"})
    assert response.status_code == 200 and "This field is required." in response.content.decode()
    assert sorted(Project.objects.filter(customer=customer).values_list("name", "status")) == [
        ("a", "active"),
        ("b", "archived"),
    ]
    assert not AuditLog.objects.exists()
