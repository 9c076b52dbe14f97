"""demo_data (SPEC §9): a population with correct counters plus exactly the planted S1 drift."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from billing.models import CreditGrant, Plan, Subscription, WebhookEvent
from billing.ops.findings import findings
from billing.services.plans import plan_change_validate
from demo.data import S1_MISSING_ROW, S1_PHANTOM_THREE, S1_SIX_PROJECTS, SCENARIOS
from demo.install import DEMO_REFUSED_LOADED
from demo.management.commands.demo_data import REFUSED_DEBUG_OFF
from tests.conftest import run_manage
from tests.factories import CustomerFactory
from tests.referee import recount
from usage.models import Customer


@pytest.mark.django_db
def test_population_is_consistent_and_s1_is_the_only_drift(capsys):
    call_command("demo_data", "--allow-debug-off", "--customers", "40", "--seed", "3")
    assert set(Plan.objects.values_list("code", flat=True)) == {"free", "starter", "growth", "pro"}
    assert Customer.objects.count() == 48  # 40, the three S1 customers and the five billing scenarios
    assert Subscription.objects.count() == 48
    assert set(Subscription.objects.values_list("processor", flat=True)) >= {"manual", "stripe"}

    emails = dict(Customer.objects.values_list("pk", "email"))
    drift = {
        (emails[uuid.UUID(d.customer_id)], d.check): (d.tracked, d.actual, d.target_id) for d in recount()
    }
    assert drift.keys() == {
        (S1_SIX_PROJECTS, "active_projects"),
        (S1_PHANTOM_THREE, "active_projects"),
        (S1_MISSING_ROW, "active_projects"),
    }
    assert drift[(S1_SIX_PROJECTS, "active_projects")][:2] == (0, 6)
    assert drift[(S1_PHANTOM_THREE, "active_projects")][:2] == (3, 0)
    assert drift[(S1_MISSING_ROW, "active_projects")] == (0, 2, None)  # no current-period row at all

    # The billing scenarios, written through the real services.
    s5 = Customer.objects.get(email=SCENARIOS["s5"][0])
    grant = CreditGrant.objects.get(customer=s5)
    assert (grant.granted, grant.remaining) == (50, 30)
    s6 = Customer.objects.get(email=SCENARIOS["s6"][0])
    statuses = sorted(WebhookEvent.objects.filter(customer_id=s6.pk).values_list("event_type", "status"))
    assert statuses == [
        ("customer.subscription.created", "processed"),
        ("customer.subscription.updated", "failed"),
        ("customer.subscription.updated", "ignored"),
        ("invoice.paid", "processed"),
    ]
    assert s6.subscriptions.get().processor == "stripe"
    assert [f.check for f in findings([s6.pk])] == ["failed_webhook"]
    s7 = Customer.objects.get(email=SCENARIOS["s7"][0])
    assert not plan_change_validate(customer=s7, target=Plan.objects.get(code="starter")).allowed

    out = capsys.readouterr().out
    assert "user admin  password billing-ops-demo" in out
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("billing-ops-demo")


@pytest.mark.django_db
def test_same_seed_same_data():
    call_command("demo_data", "--allow-debug-off", "--customers", "10", "--seed", "5")
    first = sorted(Customer.objects.values_list("email", "name"))
    Customer.objects.all().delete()
    call_command("demo_data", "--allow-debug-off", "--customers", "10", "--seed", "5")
    assert sorted(Customer.objects.values_list("email", "name")) == first


@pytest.mark.django_db(transaction=True)
def test_if_empty_keeps_existing_data():
    call_command("demo_data", "--allow-debug-off", "--customers", "5")
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed-after-the-demo")
    admin.save()
    before = Customer.objects.count()
    result = run_manage("demo_data", "--if-empty", "--allow-debug-off")
    assert result.returncode == 0, result.stderr
    assert "already loaded" in result.stderr
    assert (
        "user admin  (existed already, left as it was: password billing-ops-demo unless changed since)"
        in (result.stdout)
    )
    assert Customer.objects.count() == before
    admin.refresh_from_db()
    assert admin.check_password("changed-after-the-demo")  # an existing login is never reset

    again = run_manage("demo_data", "--allow-debug-off")  # without --if-empty: refused, not loaded twice
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == ["CommandError: " + DEMO_REFUSED_LOADED]
    assert Customer.objects.count() == before


def _real_data(kind):
    """A database in use: one thing that is not the demo's."""
    User = get_user_model()
    if kind == "customer":
        CustomerFactory(email="ada@example.com")
    elif kind == "plan":
        Plan.objects.create(code="pro", name="Business", price=9900)
    elif kind == "superuser":
        User.objects.create_superuser("admin", "ops@example.com", "a-real-password")
    elif kind == "staff":
        User.objects.create_user("carol", "carol@example.com", "a-real-password", is_staff=True)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["customer", "plan", "superuser", "staff"])
@pytest.mark.parametrize("if_empty", [True, False])
def test_refuses_a_database_holding_real_data(kind, if_empty):
    """SPEC §10: --if-empty on a populated database used to reset admin to the published password and
    create support and finance; now nothing is loaded and no login is created or changed."""
    _real_data(kind)
    users = {u.username: u.password for u in get_user_model().objects.all()}
    counts = (Customer.objects.count(), Plan.objects.count())
    result = run_manage("demo_data", "--allow-debug-off", *(["--if-empty"] if if_empty else []))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "holds data that is not the demo's" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "password" not in result.stdout
    assert {u.username: u.password for u in get_user_model().objects.all()} == users
    assert (Customer.objects.count(), Plan.objects.count()) == counts


@pytest.mark.django_db(transaction=True)
def test_refuses_with_debug_off_unless_told():
    result = run_manage("demo_data", "--customers", "3")  # the suite's settings: DEBUG off
    assert result.returncode == 2
    assert result.stderr.strip() == "CommandError: " + REFUSED_DEBUG_OFF
    assert not Customer.objects.exists() and not get_user_model().objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "args", [["--customers", "2"], ["--customers", "many"], ["--seed", "x"], ["--bogus"]]
)
def test_bad_arguments_exit_2_and_write_nothing(args):
    result = run_manage("demo_data", "--allow-debug-off", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not Customer.objects.exists()
