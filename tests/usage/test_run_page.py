"""The run page (SPEC §7 Reconciliation runs; issue 11 finding 9): its summary readable, its rows inline."""

import re

import pytest
from django.urls import reverse

from billing.ops.integrity import discrepancy_report
from tests.conftest import plant_s1
from usage.models import Customer, Project, ReconciliationRun

pytestmark = pytest.mark.django_db


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_run_page_reads_its_summary_and_lists_its_rows(admin_client):
    s1 = plant_s1()
    discrepancy_report(started_by="cron")
    run = ReconciliationRun.objects.get()
    html = admin_client.get(reverse("admin:usage_reconciliationrun_change", args=[run.pk])).content.decode()
    text = _text(html)
    assert "3 customers checked, 3 with drift, 3 drifted counters, 0 set to the truth." in text
    assert "Totals (tracked / true): transcription minutes 0 / 0; active projects 3 / 8;" in text
    assert "AI interactions 0 / 0" in text and "ai interactions" not in text
    assert "Findings: over limit 2" in text
    assert '"metrics"' not in html and "{&#x27;" not in html  # no JSON, no dict
    rows = re.search(r'id="run-rows">(.*?)</fieldset>', html, re.S).group(1)
    assert "Counters it found drifted (3)" in _text(rows)
    for customer in s1.values():
        assert customer.email in rows
    assert "+6" in _text(rows) and "active projects" in _text(rows)


def test_the_rows_are_paginated(admin_client):
    customers = Customer.objects.bulk_create(Customer(email=f"c{i:03}@example.com") for i in range(60))
    from pgtrigger import ignore

    with ignore("usage.Project:projects_on_insert"):
        Project.objects.bulk_create(Project(customer=c, name="untracked") for c in customers)
    discrepancy_report(started_by="cron")
    run = ReconciliationRun.objects.get()
    url = reverse("admin:usage_reconciliationrun_change", args=[run.pk])
    first = admin_client.get(url).content.decode()
    assert "Counters it found drifted (60)" in first and "page 1 of 2" in first
    assert first.count('<tr><td><a href="/admin/usage/customer/') == 50
    second = admin_client.get(url, {"rows": "2"}).content.decode()
    assert second.count('<tr><td><a href="/admin/usage/customer/') == 10
    assert admin_client.get(url, {"rows": "x"}).status_code == 200  # a bad page number: the first page


def test_a_one_customer_run_reads_in_the_singular(admin_client):
    """A recount read "1 customers checked, 1 with drift, 1 drifted counters" and "1 rows"."""
    s1 = plant_s1()
    discrepancy_report(started_by="support", customer_ids=[s1["six"].pk], scope=s1["six"].email)
    run = ReconciliationRun.objects.get()
    text = _text(
        admin_client.get(reverse("admin:usage_reconciliationrun_change", args=[run.pk])).content.decode()
    )
    assert "1 customer checked, 1 with drift, 1 drifted counter, 0 set to the truth." in text
    listing = _text(admin_client.get(reverse("admin:usage_reconciliationrun_changelist")).content.decode())
    assert " 1 row " in listing and "1 rows" not in listing
