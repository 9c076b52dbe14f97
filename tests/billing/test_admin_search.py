"""Searches and filters of the big admin lists answer through indexes (SPEC §7 "Fast at a million";
issue 11 deliver 5): each was measured at 1M customers by bench/admin.py, where an OR of a customer
condition with an unindexed one, or a condition evaluated row by row, walked the whole table."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import AuditLog, Subscription, WebhookEvent
from billing.ops.integrity import discrepancy_report
from demo.data import plans_ensure
from tests.factories import CustomerFactory, PresetFactory, ProjectFactory, UsageEventFactory

pytestmark = pytest.mark.django_db


def _searches(client, url, term, table):
    """The page for ``term``, and the WHERE clauses of its queries on ``table``."""
    with CaptureQueriesContext(connection) as queries:
        page = client.get(url, {"q": term}).content.decode()
    wheres = [
        q["sql"].split(" WHERE ", 1)[1]
        for q in queries
        if f'FROM "{table}"' in q["sql"] and " WHERE " in q["sql"]
    ]
    assert wheres, f"no search of {table}"
    return page, wheres


def _by_index(wheres):
    """No OR of the key with another column and no pattern match: each was a scan of the table at a
    million rows (the results were the same, only slow: the shape is what a test can see)."""
    return all(" OR " not in w and "LIKE" not in w.upper() for w in wheres)


def test_webhook_events_by_event_id_or_customer_id(admin_client):
    customer = CustomerFactory(email="hooked@example.com")
    for i, who in enumerate((customer.pk, None)):
        WebhookEvent.objects.create(
            processor="stripe",
            event_id=f"evt_{i}",
            event_type="invoice.paid",
            status="processed",
            customer_id=who,
            payload={},
        )
    url = reverse("admin:billing_webhookevent_changelist")
    for term, expected in (("evt_1", ["evt_1"]), (str(customer.pk), ["evt_0"]), ("evt_9", [])):
        page, wheres = _searches(admin_client, url, term, "webhook_events")
        assert [e for e in ("evt_0", "evt_1") if f">{e}<" in page or f"{e}</" in page] == expected, term
        assert _by_index(wheres), (term, wheres)


def test_audit_log_by_customer_id_or_actor(admin_client):
    customer = CustomerFactory(email="audited@example.com")
    AuditLog.objects.create(
        actor="sam (admin)",
        action="recount",
        target_type="customer",
        target_id=str(customer.pk),
        customer_id=customer.pk,
        reason="mine",
    )
    AuditLog.objects.create(
        actor="cron", action="recount", target_type="customer", target_id="x", reason="theirs"
    )
    url = reverse("admin:billing_auditlog_changelist")
    page, wheres = _searches(admin_client, url, str(customer.pk), "audit_log")
    assert "mine" in page and "theirs" not in page
    assert _by_index(wheres), wheres  # a customer id: its entries by index, never the actor's ILIKE
    page = admin_client.get(url, {"q": "cro"}).content.decode()
    assert "theirs" in page and "mine" not in page


def test_stale_period_filter_from_the_last_full_report(admin_client):
    plans = plans_ensure()
    stale = CustomerFactory(email="stale@example.com")
    start = timezone.now() - timedelta(days=40)
    Subscription.objects.create(
        customer=stale,
        plan=plans["starter"],
        processor="stripe",
        external_subscription_id="sub_stale",
        current_period_start=start,
        current_period_end=start + timedelta(days=30),
    )
    CustomerFactory(email="fresh@example.com")
    url = reverse("admin:usage_customer_changelist")
    assert "stale@example.com" not in admin_client.get(url, {"stale": "yes"}).content.decode()  # no report
    discrepancy_report(started_by="test")
    page = admin_client.get(url, {"stale": "yes"}).content.decode()
    assert "stale@example.com" in page and "fresh@example.com" not in page


def test_a_filtered_count_past_its_budget_is_not_counted_and_the_request_goes_on(monkeypatch):
    """A rare match along a list's index made the capped count walk 200,000 customers (26 s at 1M,
    bench/admin.py): past COUNT_BUDGET_MS the list says it did not count, and the request's
    transaction and statement timeout are as they were."""
    from django.db import connection

    from usage import admin as usage_admin
    from usage.models import Customer

    CustomerFactory.create_batch(3)

    def timeout():
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            return cursor.fetchone()[0]

    before = timeout()
    fast = usage_admin.EstimatedCountPaginator(Customer.objects.filter(email__contains="@"), 50)
    assert fast.count == 3 and fast.count_kind == "exact"
    monkeypatch.setattr(usage_admin, "COUNT_BUDGET_MS", 5)
    slow = usage_admin.EstimatedCountPaginator(
        Customer.objects.extra(where=["pg_sleep(0.05) IS NOT NULL"]),
        50,  # 50 ms a row
    )
    assert slow.count == usage_admin.COUNT_CAP + 1 and slow.count_kind == "uncounted"
    assert timeout() == before and Customer.objects.count() == 3  # the transaction goes on


def test_the_list_says_when_it_did_not_count(admin_client, monkeypatch):
    from usage import admin as usage_admin

    CustomerFactory(email="one@example.com")
    monkeypatch.setattr(usage_admin, "COUNT_BUDGET_MS", 5)
    monkeypatch.setattr(
        usage_admin.EstimatedCountPaginator, "_capped_count", lambda self: None
    )  # as when the budget runs out
    page = admin_client.get(reverse("admin:usage_customer_changelist"), {"q": "one"}).content.decode()
    assert "one@example.com" in page and "customers (not counted: counting them took too long)" in page


def test_failed_webhook_events_are_counted_along_an_index_that_serves_the_filter(admin_client):
    """The failed events' count walked the inbox's primary key back through 200,000 others for 1,001
    failed ones (0.5 % of 1.7M: 1.1 s at 1M, bench/admin.py): the capped count is unordered, so the
    failed-events index answers it; the page's order (newest id first) is served by
    webhook_events_status_order."""
    for i, status in enumerate(("failed", "processed", "failed")):
        WebhookEvent.objects.create(
            processor="stripe", event_id=f"evt_{i}", event_type="invoice.paid", status=status, payload={}
        )
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(reverse("admin:billing_webhookevent_changelist"), {"status__exact": "failed"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "evt_0" in html and "evt_2" in html and "evt_1" not in html
    counts = [q["sql"] for q in queries if q["sql"].startswith("SELECT COUNT(*)")]
    assert counts and all("ORDER BY" not in q for q in counts), counts
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef('webhook_events_status_order'::regclass), "
            "pg_get_indexdef('subscriptions_live_filter'::regclass)"
        )
        inbox, subscriptions = cursor.fetchone()
    assert "(status, id DESC)" in inbox
    assert "(processor, status, customer_id) INCLUDE (id)" in subscriptions


@pytest.mark.parametrize(
    ("changelist", "table", "make", "term", "wanted", "other"),
    [
        (
            "admin:usage_project_changelist",
            "projects",
            lambda c, name: ProjectFactory(customer=c, name=name),
            "arden",
            "Garden Centre site",
            "Bakery shop",
        ),
        (
            "admin:usage_preset_changelist",
            "presets",
            lambda c, name: PresetFactory(customer=c, name=name),
            "INTERVIEW",
            "Customer interview notes",
            "Meeting notes",
        ),
    ],
)
def test_projects_and_presets_by_part_of_their_name(
    admin_client, changelist, table, make, term, wanted, other
):
    """Project and preset names were searchable (the admin's ILIKE, a scan of 5M projects joined to
    customers), then not at all (the search read only the customer). Part of a name again, through
    its trigram index: the condition is the name's ILIKE, never with the customer's email."""
    make(CustomerFactory(email="gardener@example.com"), wanted)
    make(CustomerFactory(email="baker@example.com"), other)
    page, wheres = _searches(admin_client, reverse(changelist), term, table)
    assert wanted in page and other not in page
    assert all("email" not in w for w in wheres), wheres
    # The rows are matched by name first (a LIMITed lookup its index answers), the list by their keys:
    # the name's ILIKE inside the list's ordered query walked 5M projects when few matched.
    listing = [w for w in wheres if "ORDER BY" in w]
    assert listing and all("LIKE" not in w.upper() for w in listing), listing
    page = admin_client.get(reverse(changelist), {"q": term[:2]}).content.decode()
    assert wanted not in page  # two characters: no trigram to look up, so no name search
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_get_indexdef('{table}_name_trgm'::regclass)")
        assert "gin (upper((name)::text) gin_trgm_ops)" in cursor.fetchone()[0]


def test_usage_events_by_idempotency_key(admin_client):
    """An idempotency key (a retried charge support is asked about) found nothing: the search read only
    the customer. Now the exact key, by its index."""
    UsageEventFactory(customer=CustomerFactory(), idempotency_key="charge-2026-11-0042")
    UsageEventFactory(customer=CustomerFactory(), idempotency_key="charge-2026-11-0043")
    page, wheres = _searches(
        admin_client, reverse("admin:usage_usageevent_changelist"), " charge-2026-11-0042 ", "usage_events"
    )
    assert "charge-2026-11-0042" in page and "charge-2026-11-0043" not in page
    assert _by_index([w.split(" OR ")[-1] for w in wheres]) or all("LIKE" not in w.upper() for w in wheres)
