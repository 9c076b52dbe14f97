"""Discrepancy report, reconciliation, diagnosis (SPEC §6, §8, §9 S1, §10)."""

import csv
import io
import json
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pgtrigger
import pytest

from billing.ops.integrity import RECONCILE_LOCK, discrepancy_report, usage_reconcile
from tests.conftest import ROOT, active_count, blocked_by, manage_env, plant_s1, raw_connect, run_manage
from tests.factories import (
    CustomerFactory,
    PresetFactory,
    PresetUsageFactory,
    ProjectFactory,
    UsageEventFactory,
)
from tests.referee import assert_invariants
from usage.models import ReconciliationRun, UsageTracking
from usage.services.counters import counter_writes_allowed


def by_check_and_email(rows):
    return {(r["check"], r["email"]): r for r in rows}


# --- S1 end to end from the command line ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_s1_end_to_end_from_the_command_line():
    s1 = plant_s1()
    report = run_manage("usage_discrepancies", "--format", "json")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    rows = by_check_and_email(doc["discrepancies"])
    six = rows[("active_projects", s1["six"].email)]
    assert (six["tracked"], six["actual"], six["difference"]) == (0, 6, 6)
    phantom = rows[("active_projects", s1["phantom"].email)]
    assert (phantom["tracked"], phantom["actual"], phantom["difference"]) == (3, 0, -3)
    missing = rows[("active_projects", s1["missing"].email)]
    assert (missing["tracked"], missing["actual"], missing["target_id"]) == (0, 2, None)
    assert doc["summary"]["customers_with_drift"] == 3
    assert doc["summary"]["metrics"]["active_projects"] == {"tracked": 3, "actual": 8}
    assert [r["difference"] for r in doc["discrepancies"]] == [6, -3, 2]  # largest difference first
    assert run_manage("usage_discrepancies", "--fail-on-drift").returncode == 1

    dry = run_manage("reconcile_usage")
    assert dry.returncode == 0 and "Would set" in dry.stdout
    assert active_count(s1["six"]) == 0  # a dry run writes nothing

    applied = run_manage("reconcile_usage", "--apply", "--format", "json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["summary"]["fixed"] == 3
    assert (active_count(s1["six"]), active_count(s1["phantom"]), active_count(s1["missing"])) == (6, 0, 2)

    clean = run_manage("usage_discrepancies", "--fail-on-drift", "--format", "json")
    assert clean.returncode == 0
    after = json.loads(clean.stdout)
    assert after["discrepancies"] == []
    over = [f for f in after["findings"] if f["check"] == "over_limit" and f["email"] == s1["six"].email]
    assert over and over[0]["detail"] == "6 / 1 active projects (600 %) on Free"

    diagnosis = run_manage("diagnose_customer", s1["six"].email.upper())
    assert diagnosis.returncode == 0
    assert "6 / 1 active projects (600 %) on Free" in diagnosis.stdout
    assert "archive 5 projects or move" in diagnosis.stdout and "project(s)" not in diagnosis.stdout
    as_json = run_manage("diagnose_customer", str(s1["six"].pk), "--format", "json")
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)
    active = next(c for c in doc["counters"] if c["check"] == "active_projects")
    assert (active["tracked"], active["actual"], active["allowance"], active["left"], active["drifted"]) == (
        6,
        6,
        1,
        -5,
        False,
    )
    assert doc["plan"] == "free" and [f["check"] for f in doc["findings"]] == ["over_limit"]
    assert [a["actor"] for a in doc["audit"]] == ["manage.py reconcile_usage --apply"]

    runs = list(ReconciliationRun.objects.order_by("id").values_list("mode", "status", "fixed"))
    assert ("apply", "completed", 3) in runs


# --- the report ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_both_directions_for_metered_usage_and_presets():
    customer = CustomerFactory()
    UsageEventFactory(customer=customer, quantity=5)
    old = customer.current_period_start - timedelta(days=45)
    with pgtrigger.ignore("usage.UsageEvent:usage_events_on_insert"):
        UsageEventFactory(customer=customer, quantity=2, occurred_at=old)  # source rows with no counter row
        UsageEventFactory(customer=customer, metric="minutes", quantity=3)  # counted nowhere
    preset = PresetFactory(customer=customer)
    with pgtrigger.ignore("usage.PresetUsage:preset_usage_on_insert"):
        PresetUsageFactory(preset=preset)
    with counter_writes_allowed():
        UsageTracking.objects.filter(customer=customer).update(
            ai_interactions_count=9
        )  # counter with no source
    report = discrepancy_report(started_by="test").rows
    rows = by_check_and_email([r for r in report if r["target_id"] is not None])
    ai = rows[("ai_interactions", customer.email)]
    assert (ai["tracked"], ai["actual"]) == (9, 5)
    minutes = rows[("minutes", customer.email)]
    assert (minutes["tracked"], minutes["actual"]) == (0, 3)
    assert ("preset_usage_count", customer.email) in rows and ("preset_last_used_at", customer.email) in rows
    uncovered = [r for r in report if r["target_id"] is None]
    assert [(r["check"], r["tracked"], r["actual"]) for r in uncovered] == [("ai_interactions", 0, 2)]

    result = usage_reconcile(apply=True, started_by="test")
    assert result.summary["remaining_drift"] == 0
    assert_invariants()
    row = UsageTracking.objects.get(customer=customer, period_start__lte=old, period_end__gt=old)
    assert row.ai_interactions_count == 2  # the missing row was opened from the truth
    preset.refresh_from_db()
    assert preset.usage_count == 1 and preset.last_used_at is not None


@pytest.mark.django_db
def test_reconciliation_touches_nothing_but_the_drifted_counters():
    right = CustomerFactory()
    ProjectFactory(customer=right)
    UsageEventFactory(customer=right)
    wrong = CustomerFactory()
    ProjectFactory(customer=wrong)
    with counter_writes_allowed():
        UsageTracking.objects.filter(customer=wrong).update(active_projects_count=5)
    before = {
        r.pk: (r.active_projects_count, r.ai_interactions_count, r.updated_at)
        for r in UsageTracking.objects.all()
    }
    result = usage_reconcile(apply=True, started_by="test")
    after = {
        r.pk: (r.active_projects_count, r.ai_interactions_count, r.updated_at)
        for r in UsageTracking.objects.all()
    }
    changed = [pk for pk in before if before[pk] != after[pk]]
    assert changed == [UsageTracking.objects.get(customer=wrong).pk]
    assert after[changed[0]][:2] == (1, 0)
    assert [(r.check_name, r.tracked, r.actual, r.fixed) for r in result.run.rows.all()] == [
        ("active_projects", 5, 1, True)
    ]


@pytest.mark.django_db
def test_csv_and_table_formats(capsys):
    from django.core.management import call_command

    s1 = plant_s1()
    call_command("usage_discrepancies", "--format", "csv")
    lines = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    drift = [line for line in lines if line["kind"] == "discrepancy"]
    assert {(line["email"], line["tracked"], line["actual"]) for line in drift} == {
        (s1["six"].email, "0", "6"),
        (s1["phantom"].email, "3", "0"),
        (s1["missing"].email, "0", "2"),
    }
    call_command("usage_discrepancies", "--customer", s1["six"].email)
    out = capsys.readouterr().out
    assert "Customers checked: 1" in out and s1["six"].email in out and s1["phantom"].email not in out


# --- safe while the product writes -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_reconciliation_in_a_loop_while_the_product_writes_loses_nothing():
    import random
    import threading

    customers = [c.pk for c in CustomerFactory.create_batch(12)]
    presets = [PresetFactory(customer_id=c).pk for c in customers]
    stop_drift, stop_writes = threading.Event(), threading.Event()
    errors = []

    def writer(seed):
        rng = random.Random(seed)
        try:
            with raw_connect(autocommit=True) as conn:
                while not stop_writes.is_set():
                    c = rng.choice(customers)
                    op = rng.randrange(5)
                    if op == 0:
                        conn.execute("INSERT INTO projects (customer_id, name) VALUES (%s, 'w')", [c])
                    elif op == 1:
                        conn.execute(
                            "UPDATE projects SET status = CASE status WHEN 'active' THEN 'archived' ELSE 'active' END "
                            "WHERE id = (SELECT id FROM projects WHERE customer_id = %s ORDER BY random() LIMIT 1)",
                            [c],
                        )
                    elif op == 2:
                        conn.execute(
                            "UPDATE projects SET customer_id = %s WHERE id = (SELECT id FROM projects WHERE customer_id = %s "
                            "ORDER BY random() LIMIT 1)",
                            [rng.choice(customers), c],
                        )
                    elif op == 3:
                        conn.execute(
                            "INSERT INTO usage_events (customer_id, metric, quantity) VALUES (%s, 'minutes', 1)",
                            [c],
                        )
                    else:
                        p = rng.choice(presets)
                        conn.execute(
                            "INSERT INTO preset_usage (preset_id, customer_id) SELECT id, customer_id FROM presets WHERE id = %s",
                            [p],
                        )
        except Exception as exc:
            errors.append(exc)

    def drifter():
        """A buggy code path: writes source rows with the counter triggers ignored, so drift appears."""
        rng = random.Random(99)
        try:
            with raw_connect(autocommit=True) as conn:
                while not stop_drift.is_set():
                    with conn.transaction():
                        conn.execute(
                            "SELECT set_config('pgtrigger.ignore', %s, true)",
                            ["{" + ",".join(t.get_pgid(m) for m, t in _counter_triggers()) + "}"],
                        )
                        conn.execute(
                            "INSERT INTO projects (customer_id, name) VALUES (%s, 'untracked')",
                            [rng.choice(customers)],
                        )
                    time.sleep(0.01)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)] + [
        threading.Thread(target=drifter)
    ]
    for t in threads:
        t.start()
    fixed = 0
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            fixed += usage_reconcile(apply=True, started_by="loop", batch_size=5).summary["fixed"]
        stop_drift.set()
        time.sleep(0.05)
        for _ in range(3):  # the drift is gone; reconciliation keeps racing the honest writers
            usage_reconcile(apply=True, started_by="loop", batch_size=5)
    finally:
        stop_drift.set()
        stop_writes.set()
        for t in threads:
            t.join()
    assert errors == []
    assert fixed > 0  # it really had drift to fix while the writers ran
    assert_invariants()  # the quiet database: no increment was lost to a reconciliation


@pytest.mark.django_db(transaction=True)
def test_reconciliation_waits_for_a_writer_holding_the_counter_and_counts_its_project():
    """Lock, then recount (SPEC §6): a product transaction holds the counter row when reconciliation
    reaches it; reconciliation must wait for it and count its project, not set the counter to what it
    saw before the writer committed."""
    import threading

    from django.db import connection

    customer = CustomerFactory()
    ProjectFactory(customer=customer)
    with pgtrigger.ignore("usage.Project:projects_on_insert"):
        ProjectFactory(customer=customer)  # drift: 2 active projects, counter 1
    errors = []

    def reconcile():
        try:
            usage_reconcile(customer_ids=[customer.pk], apply=True, started_by="test")
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    with raw_connect() as writer:
        with writer.transaction():
            writer.execute(
                "INSERT INTO projects (customer_id, name) VALUES (%s, 'written meanwhile')", [customer.pk]
            )
            reconciliation = threading.Thread(target=reconcile)
            reconciliation.start()
            # Reconciliation is now waiting for the writer's counter row (its trigger updated it).
            assert blocked_by(writer.info.backend_pid, unless=reconciliation) is not None
        reconciliation.join(60)
    assert errors == []
    assert active_count(customer) == 3
    assert_invariants()


def _counter_triggers():
    from usage.models import Project

    return [(Project, t) for t in Project._meta.triggers if t.name != "projects_on_truncate"]


@pytest.mark.django_db(transaction=True)
def test_a_killed_reconciliation_is_resumed_and_converges():
    customers = CustomerFactory.create_batch(150)
    with pgtrigger.ignore("usage.Project:projects_on_insert"):
        from usage.models import Project

        Project.objects.bulk_create([Project(customer=c, name="untracked") for c in customers])
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "reconcile_usage", "--apply", "--batch-size", "1"],
        env=manage_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not ReconciliationRun.objects.filter(mode="apply", last_customer_id__isnull=False).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = ReconciliationRun.objects.get(mode="apply")
    assert killed.status == "running" and 0 < killed.fixed < 150

    again = run_manage("reconcile_usage", "--apply", "--format", "json")
    assert again.returncode == 0, again.stderr
    killed.refresh_from_db()
    resumed = ReconciliationRun.objects.filter(mode="apply").latest("id")
    assert killed.status == "failed" and "interrupted" in killed.error
    assert resumed.resumed_from_id == killed.pk and resumed.status == "completed"
    assert killed.fixed + resumed.fixed == 150
    assert_invariants()


@pytest.mark.django_db(transaction=True)
def test_one_reconciliation_at_a_time():
    plant_s1()
    with raw_connect(autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [RECONCILE_LOCK])
        busy = run_manage("reconcile_usage", "--apply")
        other.execute("SELECT pg_advisory_unlock(%s)", [RECONCILE_LOCK])
    assert busy.returncode == 2
    assert "another reconciliation is running" in busy.stderr and "Traceback" not in busy.stderr
    assert run_manage("reconcile_usage", "--apply").returncode == 0


# --- bad input (SPEC §10) -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "args, message",
    [
        (["usage_discrepancies", "--format", "xml"], "invalid choice"),
        (["usage_discrepancies", "--customer", "nobody@example.com"], "no customer with email or id"),
        (["usage_discrepancies", "--customer", ""], "no customer with email or id"),
        (["reconcile_usage", "--batch-size", "0"], "must be at least 1"),
        (["reconcile_usage", "--batch-size", "ten"], "expected a whole number"),
        (
            ["reconcile_usage", "--apply", "--customer", "ffffffff-ffff-ffff-ffff-ffffffffffff"],
            "no customer with email or id",
        ),
        (["reconcile_usage", "--format", "yaml"], "invalid choice"),
        (["diagnose_customer"], "the following arguments are required"),
        (["diagnose_customer", "nobody@example.com"], "no customer with email or id"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line_and_write_nothing(args, message):
    plant_s1()
    runs_before = ReconciliationRun.objects.count()
    result = run_manage(*args)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert ReconciliationRun.objects.count() == runs_before
    assert result.stdout == ""


@pytest.mark.django_db(transaction=True)
def test_unreachable_database_exits_2():
    env = manage_env()
    env["DATABASE_URL"] = "postgres://nobody@127.0.0.1:1/nothing"
    for command in ("usage_discrepancies", "reconcile_usage", "diagnose_customer x@example.com"):
        result = run_manage(*command.split(), env=env)
        assert result.returncode == 2 and "database unreachable" in result.stderr, command
