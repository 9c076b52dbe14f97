"""The report streams its findings (SPEC §6 "streaming", §11 "memory flat"): read a chunk at a time
through server-side cursors, written to the run a batch at a time and counted on the way out, never
kept in a list (94k findings at 1M customers were). What it writes and prints is what it was."""

import csv
import io
import json
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import Plan, RunFinding
from billing.ops import integrity
from billing.ops.findings import FINDING_CHECKS, findings
from billing.ops.integrity import discrepancy_report
from demo.data import plans_ensure
from tests.factories import CustomerFactory
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def over_limit_customers():
    plans_ensure()
    Plan.objects.filter(code="free").update(ai_interactions_per_period=1)
    customers = [CustomerFactory(email=f"over-{n}@stream.test") for n in range(5)]
    for n, customer in enumerate(customers, start=2):
        UsageEvent.objects.create(customer=customer, metric="ai_interaction", quantity=n)
    return customers


def test_findings_stream_to_the_output_and_to_the_run_a_batch_at_a_time(over_limit_customers, monkeypatch):
    monkeypatch.setattr(integrity, "FINDINGS_BATCH", 2)
    expected = [f.as_dict() for f in findings()]
    assert sum(f["check"] == "over_limit" for f in expected) == 5

    seen = {}

    def emit(scan, found):
        seen["kind"] = type(found).__name__
        seen["findings"] = [f.as_dict() for f in found]

    with CaptureQueriesContext(connection) as queries:
        result = discrepancy_report(started_by="test", emit=emit)
    assert seen["kind"] == "generator"  # never a list
    assert seen["findings"] == expected
    assert result.findings == []  # streamed, not kept
    inserts = [q for q in queries if q["sql"].startswith('INSERT INTO "reconciliation_run_findings"')]
    assert len(inserts) == 3  # 5 findings with a customer, 2 a batch

    kept = RunFinding.objects.filter(run=result.run)
    assert sorted((r.check_name, str(r.customer_id), r.detail) for r in kept) == sorted(
        (f["check"], f["customer_id"], f["detail"]) for f in expected if f["customer_id"]
    )
    customers = Counter(
        check for check, _ in {(f["check"], f["customer_id"] or f["target_id"]) for f in expected}
    )
    assert result.summary["findings"] == {check: customers.get(check, 0) for check in FINDING_CHECKS}
    assert result.run.summary["findings"]["over_limit"] == 5


def test_a_report_emit_leaves_unread_is_still_recorded_and_counted(over_limit_customers):
    result = discrepancy_report(started_by="test", emit=lambda scan, found: next(iter(found), None))
    assert RunFinding.objects.filter(run=result.run, check_name="over_limit").count() == 5
    assert result.summary["findings"]["over_limit"] == 5


def test_every_output_format_lists_every_finding(over_limit_customers):
    expected = {(f.check, f.email or "", f.detail) for f in findings()}
    outputs = {}
    for fmt in ("json", "csv", "table"):
        out = io.StringIO()
        call_command("usage_discrepancies", "--format", fmt, stdout=out)
        outputs[fmt] = out.getvalue()
    document = json.loads(outputs["json"])
    assert {(f["check"], f["email"] or "", f["detail"]) for f in document["findings"]} == expected
    rows = [r for r in csv.DictReader(io.StringIO(outputs["csv"])) if r["kind"] == "finding"]
    assert {(r["check"], r["email"], r["detail"]) for r in rows} == expected
    for _check, email, detail in expected:
        assert f"{email}: {detail}" in outputs["table"]


def test_fail_on_drift_still_sees_an_unhealthy_trigger():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'projects'::regclass AND NOT tgisinternal LIMIT 1"
        )
        (name,) = cursor.fetchone()
        cursor.execute(f'ALTER TABLE projects DISABLE TRIGGER "{name}"')
    with pytest.raises(SystemExit) as exit_:
        call_command("usage_discrepancies", "--fail-on-drift", stdout=io.StringIO())
    assert exit_.value.code == 1
