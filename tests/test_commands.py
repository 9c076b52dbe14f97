"""Every command's failure paths (SPEC §8, §10): an unreachable database is one line and exit 2,
stdout is never left with half a document, cron's --now stays near the database clock."""

import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from billing.services.consume import consume
from demo.data import plans_ensure
from tests.conftest import run_manage
from tests.factories import CustomerFactory
from usage.models import Customer
from usage.services.counters import counter_writes_allowed


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


COMMANDS = [
    ["usage_report", "--month", "2026-01", "--format", "json"],
    ["usage_report", "--month", "2026-01", "--format", "csv"],
    ["usage_discrepancies", "--format", "json"],
    ["reconcile_usage", "--format", "json"],
    ["reconcile_usage", "--apply"],
    ["diagnose_customer", "someone@example.com", "--format", "json"],
    ["validate_plan_change", "someone@example.com", "--to", "pro"],
    ["check_triggers", "--format", "json"],
    ["roll_usage_periods"],
    ["roll_usage_periods", "--now", "2026-01-01T00:00:00Z"],
    ["demo_data", "--allow-debug-off"],
    ["migrate"],
    ["showmigrations"],
    ["createsuperuser", "--noinput", "--username", "x", "--email", "x@example.com"],
    ["changepassword", "x"],
    ["flush", "--noinput"],
    ["pgtrigger", "ls"],
]


def test_unreachable_database_is_one_line_and_exit_2_for_every_command():
    """Django's own commands printed a 60-line traceback (exit 1); usage_report left a cut-off JSON
    document on stdout."""
    env = {**os.environ, "DATABASE_URL": f"postgres://app:secret@127.0.0.1:{_closed_port()}/billing"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda args: (args, run_manage(*args, env=env, timeout=60)), COMMANDS))
    for args, result in results:
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.returncode, result.stderr[-500:])
        assert len(lines) == 1 and lines[0].startswith("CommandError: database unreachable: "), (args, lines)
        assert result.stdout == "", (args, result.stdout)  # nothing half-written


@pytest.mark.django_db(transaction=True)
class TestNow:
    def _due(self):
        plans_ensure()
        now = timezone.now()
        return CustomerFactory(
            current_period_start=now - timedelta(days=35), current_period_end=now - timedelta(days=4)
        )

    @pytest.mark.parametrize(
        "now", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "+2 days", "-2 days"]
    )
    def test_far_from_the_database_clock_needs_force(self, now):
        """--now 9999-12-31 moved every customer into year 9999, for good."""
        due = self._due()
        if now[0] in "+-":
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT (now() + interval '{now}')")
                now = cursor.fetchone()[0].isoformat()
        before = (due.current_period_start, due.current_period_end)
        result = run_manage("roll_usage_periods", "--now", now)
        assert result.returncode == 2, result.stdout + result.stderr
        line = result.stderr.strip()
        assert line.startswith(f"CommandError: --now {now[:4]}") and "add --force if it is meant" in line
        assert "\n" not in line and result.stdout == ""
        due.refresh_from_db()
        assert (due.current_period_start, due.current_period_end) == before

    @pytest.mark.parametrize("now", ["9999-12-31T23:59:59Z", "1999-12-31T23:00:00Z", "+1130 days"])
    def test_force_accepts_no_now_outside_the_horizon(self, now):
        """With --force, --now 9999-12-31 still moved every customer into year 9999."""
        due = self._due()
        if now[0] == "+":
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT (now() + interval '{now}')")
                now = cursor.fetchone()[0].isoformat()
        before = (due.current_period_start, due.current_period_end)
        result = run_manage("roll_usage_periods", "--now", now, "--force")
        assert result.returncode == 2, result.stdout + result.stderr
        line = result.stderr.strip()
        assert line.startswith(f"CommandError: --now {now[:4]}") and "even with --force" in line, line
        assert "\n" not in line and result.stdout == ""
        due.refresh_from_db()
        assert (due.current_period_start, due.current_period_end) == before

    def test_within_a_day_runs_and_force_accepts_a_catch_up(self):
        due = self._due()
        with connection.cursor() as cursor:
            cursor.execute("SELECT now() - interval '23 hours', now() - interval '3 days'")
            near, far = cursor.fetchone()
        ran = run_manage("roll_usage_periods", "--now", near.isoformat())
        assert (ran.returncode, ran.stdout.strip()) == (0, "opened 1 usage period"), ran.stderr
        other = CustomerFactory(
            current_period_start=far - timedelta(days=31), current_period_end=far - timedelta(hours=1)
        )
        forced = run_manage("roll_usage_periods", "--now", far.isoformat(), "--force")
        assert (forced.returncode, forced.stdout.strip()) == (0, "opened 1 usage period"), forced.stderr
        other.refresh_from_db()
        assert other.current_period_start == far - timedelta(hours=1)
        assert Customer.objects.get(pk=due.pk).current_period_end > timezone.now()


@pytest.mark.parametrize("month", ["0000-01", "1999-12", "9999-12", "3000-01"])
def test_absurd_months_are_refused(month):
    result = run_manage("usage_report", "--month", month, "--format", "json")
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and "out of range" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.django_db(transaction=True)
def test_fractions_are_exact_strings_in_json():
    """JSON reports printed 1.5 minutes as a float; exact decimals are strings, whole numbers ints."""
    plans_ensure()
    customer = CustomerFactory(email="fraction@example.com")
    consume(customer_id=customer.pk, metric="minutes", amount=Decimal("1.5"))
    consume(customer_id=customer.pk, metric="minutes", amount=Decimal("0.125"))
    consume(customer_id=customer.pk, metric="ai_interaction", amount=2)
    month = customer.current_period_start.strftime("%Y-%m")
    result = run_manage("usage_report", "--month", month, "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout, parse_float=lambda text: pytest.fail(f"a float: {text}"))
    row = next(r for r in document["rows"] if r["email"] == "fraction@example.com")
    assert (row["minutes"], row["ai_interactions"]) == ("1.625", 2)
    assert document["totals"]["minutes"] == "1.625"

    # Drift of a fraction: the discrepancy report's JSON.
    with transaction.atomic(), counter_writes_allowed(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE usage_tracking SET minutes_used = minutes_used + 0.25 WHERE customer_id = %s",
            [customer.pk],
        )
    drift = run_manage("usage_discrepancies", "--format", "json", "--customer", "fraction@example.com")
    assert drift.returncode == 0, drift.stderr
    document = json.loads(drift.stdout, parse_float=lambda text: pytest.fail(f"a float: {text}"))
    assert [(r["tracked"], r["actual"], r["difference"]) for r in document["discrepancies"]] == [
        ("1.875", "1.625", "-0.25")
    ]


LONG = "x" * 5000
UNDECODABLE = os.fsdecode(b"caf\xff")  # bytes that are not UTF-8 in argv: a lone surrogate in Python


@pytest.mark.parametrize(
    "args, refusal",
    [
        (["diagnose_customer", LONG], "no customer with email or id 'xxx"),
        (["diagnose_customer", "--format", LONG, "a@example.com"], "invalid choice: 'xxx"),
        (["reconcile_usage", "--customer", LONG], "no customer with email or id 'xxx"),
        (["reconcile_usage", "--started-by", LONG], "at most 200 characters, not 'xxx"),
        (["reconcile_usage", "--batch-size", LONG], "expected a whole number, got 'xxx"),
        (["roll_usage_periods", "--now", LONG], "expected an ISO-8601 date and time, got 'xxx"),
        (["usage_report", "--month", LONG], "month must be YYYY-MM (e.g. 2026-11), not 'xxx"),
        (["validate_plan_change", LONG, "--to", "pro"], "no customer with email or id 'xxx"),
        (["db_roles", "--app", LONG], "role names are lower-case letters"),
        (["check_triggers", "--database", LONG], "invalid choice: 'xxx"),
        (["usage_discrepancies", "--fail-on-drift", LONG], "unrecognized arguments: xxx"),
    ],
    ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else None,
)
def test_commands_echo_no_argument_whole(args, refusal):
    """diagnose_customer echoed a 5,000-character argument whole (so did every command's refusals)."""
    result = run_manage(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert refusal in result.stderr, result.stderr[-2000:]
    assert len(result.stderr) < 1000 and "… (5,000 characters)" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize(
    "args, refusal",
    [
        (["diagnose_customer", UNDECODABLE], "no customer with email or id 'caf\\udcff'"),
        (["usage_discrepancies", "--customer", UNDECODABLE], "no customer with email or id 'caf\\udcff'"),
        # Ran the whole reconciliation and failed storing its run: exit 1 and a traceback.
        (["reconcile_usage", "--started-by", UNDECODABLE], "holds a NUL or bytes that are not UTF-8"),
        # Was "database error: bigint out of range" after the first query.
        (["roll_usage_periods", "--batch-size", "1" + "0" * 30], "must be at most 1,000,000"),
    ],
)
def test_commands_refuse_undecodable_or_absurd_arguments_in_words(args, refusal):
    """The driver's "'utf-8' codec can't encode character '\\udcff'" was the message, or a traceback."""
    result = run_manage(*args)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr[-2000:]
    assert refusal in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
