"""Reconciling every customer is a superuser's background run (SPEC §7 Roles; issue 11 finding 7).

Support reconciles selections of at most 200 customers (one request, one confirmation page); "select
all" across pages is refused with where to go instead. A superuser starts the run over every customer,
which goes on in its own process, batched, its progress on the run page.
"""

import time

import pytest
from django.test import Client
from django.urls import reverse

from billing.ops.integrity import RECONCILE_LOCK
from tests.conftest import active_count, plant_s1, raw_connect
from tests.factories import CustomerFactory
from usage.models import Customer, ReconciliationRun

LIST = "admin:usage_customer_changelist"
RUNS = "admin:usage_reconciliationrun_changelist"
ALL = "admin:usage_reconciliationrun_reconcile_all"


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def superuser(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.mark.django_db
def test_support_cannot_reconcile_every_customer_from_the_list(staff_client):
    support = staff_client("sam", "Support")
    s1 = plant_s1()
    Customer.objects.bulk_create(Customer(email=f"bulk{i}@example.com") for i in range(200))
    ids = [str(c.pk) for c in s1.values()]
    for action in ("reconcile_action", "discrepancy_report_action"):
        response = support.post(
            reverse(LIST),
            {"action": action, "_selected_action": ids, "select_across": "1", "confirm": "yes"},
            follow=True,
        )
        assert any(m.startswith("Select at most 200 customers") for m in _messages(response)), action
    assert not ReconciliationRun.objects.exists()
    assert active_count(s1["six"]) == 0
    # a selection within the bound still works
    response = support.post(reverse(LIST), {"action": "reconcile_action", "_selected_action": ids})
    assert "Yes, set these counters" in response.content.decode()


@pytest.mark.django_db
def test_support_has_no_reconcile_all(staff_client):
    support = staff_client("sam", "Support")
    assert 'id="reconcile-all-button"' not in support.get(reverse(RUNS)).content.decode()
    assert support.get(reverse(ALL)).status_code == 403
    assert support.post(reverse(ALL)).status_code == 403
    assert not ReconciliationRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_superuser_reconciles_every_customer_in_the_background(superuser):
    s1 = plant_s1()
    CustomerFactory.create_batch(3)
    runs = superuser.get(reverse(RUNS)).content.decode()
    assert 'id="reconcile-all-button"' in runs
    confirm = superuser.get(reverse(ALL))
    assert "Yes, reconcile every customer" in confirm.content.decode()
    assert not ReconciliationRun.objects.exists()  # nothing before the yes

    started = superuser.post(reverse(ALL), follow=True)
    assert "Started reconciling every customer in the background" in " ".join(_messages(started))
    deadline = time.monotonic() + 120
    while not ReconciliationRun.objects.filter(mode="apply", status="completed").exists():
        assert time.monotonic() < deadline, list(ReconciliationRun.objects.values())
        time.sleep(0.1)
    run = ReconciliationRun.objects.get(mode="apply")
    assert (run.fixed, run.started_by, run.scope) == (3, "root (admin, every customer)", "all customers")
    assert (active_count(s1["six"]), active_count(s1["phantom"]), active_count(s1["missing"])) == (6, 0, 2)
    page = superuser.get(reverse("admin:usage_reconciliationrun_change", args=[run.pk])).content.decode()
    assert "1 of 1 batches" in page


@pytest.mark.django_db(transaction=True)
def test_reconcile_all_while_another_runs_is_refused_and_starts_nothing(superuser):
    plant_s1()
    with raw_connect(autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [RECONCILE_LOCK])
        response = superuser.post(reverse(ALL), follow=True)
        other.execute("SELECT pg_advisory_unlock(%s)", [RECONCILE_LOCK])
    assert any("another reconciliation is running" in m for m in _messages(response))
    time.sleep(1)
    assert not ReconciliationRun.objects.exists()
