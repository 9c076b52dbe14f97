"""The audit log (SPEC §5): written with each change, refused UPDATE and DELETE by the database."""

import pytest
from django.db import ProgrammingError, connection
from django.urls import reverse

from billing.models import AuditLog
from billing.services.audit import audit_record
from tests.conftest import plant_s1, raises_sqlstate, run_manage

REFUSED = r"^pgtrigger: Cannot update or delete rows from audit_log table\n"

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"]
)
def test_the_database_refuses_update_and_delete(statement):
    audit_record(actor="test", action="recount", target_type="customer", target_id="x", reason="because")
    with raises_sqlstate(ProgrammingError, "P0001", match=REFUSED), connection.cursor() as cursor:
        cursor.execute(statement)
    assert AuditLog.objects.get().actor == "test"


def test_the_orm_cannot_edit_or_delete_either():
    row = audit_record(actor="test", action="recount", target_type="customer", target_id="x")
    row.actor = "rewritten"
    with raises_sqlstate(ProgrammingError, "P0001", match=REFUSED):
        row.save()
    with raises_sqlstate(ProgrammingError, "P0001", match=REFUSED):
        AuditLog.objects.all().delete()
    assert AuditLog.objects.get().actor == "test"


def test_a_recount_from_the_admin_is_audited_with_before_and_after(staff_client):
    client = staff_client("sam", "Support")
    s1 = plant_s1()
    client.post(reverse("admin:usage_customer_recount", args=[s1["six"].pk]))
    row = AuditLog.objects.get()
    assert (row.actor, row.action, row.target_id) == ("sam (admin)", "recount", str(s1["six"].pk))
    assert list(row.before.values()) == [0] and list(row.after.values()) == [6]
    assert "reconciliation run #" in row.reason
    page = client.get(reverse("admin:usage_customer_change", args=[s1["six"].pk])).content.decode()
    assert 'id="audit"' in page and "sam (admin): <strong>recount</strong>" in page
    assert "active projects: 0 → 6" in page
    audit_list = client.get(reverse("admin:billing_auditlog_changelist")).content.decode()
    assert "sam (admin)" in audit_list and "reconciliation run #" in audit_list


@pytest.mark.django_db(transaction=True)
def test_reconciliation_from_cron_leaves_one_audit_row_per_customer_it_changed():
    s1 = plant_s1()
    assert run_manage("reconcile_usage", "--apply").returncode == 0
    audited = set(AuditLog.objects.values_list("customer_id", "actor"))
    assert audited == {(c.pk, "manage.py reconcile_usage --apply") for c in s1.values()}
    assert run_manage("reconcile_usage", "--apply").returncode == 0  # nothing drifted: nothing audited
    assert AuditLog.objects.count() == 3


def test_an_audit_entry_lists_what_changed_and_reads_times_for_people():
    """A webhook's effect records every field; the page listed "plan: growth → growth" and ISO times."""
    from billing.services.audit import audit_changes

    before = {"plan": "growth", "status": "active", "period_end": "2026-12-01T00:00:00+00:00"}
    after = {"plan": "growth", "status": "active", "period_end": "2027-01-01T00:00:00+00:00"}
    assert audit_changes(before, after) == ["period end: 2026-12-01 00:00 UTC → 2027-01-01 00:00 UTC"]


def test_the_audit_log_pages_show_changes_not_json(staff_client):
    """SPEC §7: before/after as a readable list of changes, never the stored JSON (the audit log's
    page showed {"metric": "minutes", "granted": "5", ...})."""
    from billing.services.credits import credit_grant
    from tests.factories import CustomerFactory

    credit_grant(
        customer=CustomerFactory(),
        metric="minutes",
        quantity="1000",
        source="goodwill",
        actor="t",
        reason="r",
    )
    entry = AuditLog.objects.get()
    support = staff_client("sam", "Support")
    for url in ("/admin/billing/auditlog/", f"/admin/billing/auditlog/{entry.pk}/change/"):
        html = support.get(url).content.decode()
        assert "granted: 1,000" in html and "metric: transcription minutes" in html, url
        assert "&quot;granted&quot;" not in html and '"granted"' not in html, url


def test_the_audit_list_names_the_customer_and_fits_a_long_reason_in_a_line(staff_client):
    """The list showed each entry's target as an internal row id and no customer, and a long reason
    whole: one 500-character word stretched the table past 1,400 px, cutting the reasons off."""
    from billing.services.credits import credit_grant
    from tests.factories import CustomerFactory

    customer = CustomerFactory(email="long.reason@example.com")
    grant = credit_grant(
        customer=customer, metric="minutes", quantity="5", source="goodwill", actor="t", reason="z" * 500
    )
    html = staff_client("sam", "Support").get("/admin/billing/auditlog/").content.decode()
    assert "long.reason@example.com" in html
    assert str(grant.pk) not in html
    assert "z" * 500 not in html and "z" * 60 in html
