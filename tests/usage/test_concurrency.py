"""S2 and friends: real concurrent connections against the real server (SPEC §4, §9)."""

import random
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from tests.conftest import blocked_by, raw_connect, waiting
from tests.factories import CustomerFactory, PresetFactory, PresetUsageFactory, ProjectFactory
from tests.referee import assert_invariants
from usage.selectors import expected_sql_functions, trigger_health

pytestmark = pytest.mark.django_db(transaction=True)

PAIRS = 30  # 60 connections, inside the server's default max_connections of 100


def create_two_projects_at_once(customer_ids, tag):
    """For every customer, two connections insert a project into overlapping transactions.

    The overlap is forced, not hoped for: A inserts and stays uncommitted; B inserts next, so B's
    trigger runs while A's row is invisible to it (the read-then-write race COUNT(*) triggers lose);
    A commits only once the server shows B waiting on A's lock. Pairs run side by side, 30 at once.
    """
    barrier = threading.Barrier(2 * PAIRS)
    errors = []
    steps = [customer_ids[i : i + PAIRS] for i in range(0, len(customer_ids), PAIRS)]
    pairs = [{"a_inserted": threading.Event(), "b_pid": None} for _ in range(PAIRS)]

    def side_a(slot, conn, customer_id):
        pair = pairs[slot]
        with conn.transaction():
            conn.execute(
                "INSERT INTO projects (customer_id, name) VALUES (%s, %s)", [customer_id, f"{tag}-a"]
            )
            pair["a_inserted"].set()
            deadline = time.monotonic() + 30
            while conn.info.backend_pid not in (
                conn.execute("SELECT pg_blocking_pids(%s)", [pair["b_pid"]]).fetchone()[0] or []
            ):
                assert time.monotonic() < deadline, "B never waited on A: the counter rows are not locked"
                time.sleep(0.001)

    def side_b(slot, conn, customer_id):
        pair = pairs[slot]
        assert pair["a_inserted"].wait(30)
        with conn.transaction():
            conn.execute(
                "INSERT INTO projects (customer_id, name) VALUES (%s, %s)", [customer_id, f"{tag}-b"]
            )

    def worker(slot, side):
        try:
            with raw_connect() as conn:
                if side == "b":
                    pairs[slot]["b_pid"] = conn.info.backend_pid
                for step in steps:
                    barrier.wait(timeout=60)
                    if side == "a":
                        pairs[slot]["a_inserted"].clear()
                    barrier.wait(timeout=60)
                    if slot < len(step):
                        (side_a if side == "a" else side_b)(slot, conn, step[slot])
        except Exception as exc:  # reported below; a dead thread would also break the barrier
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(slot, side)) for slot in range(PAIRS) for side in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def active_counts(customer_ids):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.id, coalesce(t.active_projects_count, 0) FROM customers c "
            "LEFT JOIN usage_tracking t ON t.customer_id = c.id AND t.period_start <= now() AND t.period_end > now() "
            "WHERE c.id = ANY(%s)",
            [customer_ids],
        )
        return dict(cursor.fetchall())


def test_s2_300_customers_create_two_projects_at_the_same_moment():
    customer_ids = [c.pk for c in CustomerFactory.create_batch(300)]
    # First round: no counter row exists yet, so both writers race to create it.
    create_two_projects_at_once(customer_ids, "first")
    assert set(active_counts(customer_ids).values()) == {2}
    # Second round: the row exists, both writers race to increment it.
    create_two_projects_at_once(customer_ids, "second")
    assert set(active_counts(customer_ids).values()) == {4}
    assert_invariants()


NAIVE_RECOUNT = """
CREATE OR REPLACE FUNCTION usage_tracking_add_active(p_customer uuid[], p_delta integer[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE usage_tracking t
    SET active_projects_count = (SELECT count(*) FROM projects p
                                 WHERE p.customer_id = t.customer_id AND p.status = 'active')
    WHERE t.customer_id = ANY (p_customer) AND t.period_start <= now() AND t.period_end > now();
END;
$$;
"""


def test_the_s2_harness_catches_a_count_then_upsert_trigger():
    """The race above is real: with a COUNT(*)-and-overwrite trigger every counter ends at 1."""
    customer_ids = [c.pk for c in CustomerFactory.create_batch(PAIRS)]
    for customer_id in customer_ids:  # open each customer's counter row (at 0)
        ProjectFactory(customer_id=customer_id).delete()
    with connection.cursor() as cursor:
        cursor.execute(NAIVE_RECOUNT)
    try:
        create_two_projects_at_once(customer_ids, "naive")
        counts = list(active_counts(customer_ids).values())
    finally:
        with connection.cursor() as cursor:
            body = expected_sql_functions()["usage_tracking_add_active"]
            cursor.execute(
                "CREATE OR REPLACE FUNCTION usage_tracking_add_active(p_customer uuid[], p_delta integer[]) "
                f"RETURNS void LANGUAGE plpgsql AS $${body}$$"
            )
    assert counts == [1] * PAIRS, counts
    assert all(s.ok for s in trigger_health())


def test_projects_moving_between_customers_while_both_create_and_archive():
    a, b = CustomerFactory.create_batch(2)
    ids = [
        str(p.pk)
        for p in ProjectFactory.create_batch(10, customer=a) + ProjectFactory.create_batch(10, customer=b)
    ]
    errors = []
    rounds = 60

    def run(work):
        try:
            with raw_connect(autocommit=True) as conn:
                for i in range(rounds):
                    work(conn, i)
        except Exception as exc:
            errors.append(exc)

    # Multi-row statements lock their project rows in id order, as a careful writer does: two
    # UPDATEs that lock overlapping rows in physical order can deadlock with or without triggers.
    # The counter triggers add no lock cycle of their own: they lock counter rows in one global
    # order, after the statement holds all its project rows.
    in_id_order = "SELECT id FROM projects WHERE id = ANY(%s) ORDER BY id FOR UPDATE"

    def mover(conn, i):
        # Moves projects both ways in one statement: each statement locks both counter rows.
        picked = random.Random(i).sample(ids, 4)
        conn.execute(
            "UPDATE projects SET customer_id = CASE WHEN customer_id = %s THEN %s ELSE %s END "
            f"WHERE id IN ({in_id_order})",
            [a.pk, b.pk, a.pk, picked],
        )

    def creator(customer):
        def create(conn, i):
            conn.execute(
                "INSERT INTO projects (customer_id, name) VALUES (%s, %s)", [customer.pk, f"new {i}"]
            )

        return create

    def archiver(conn, i):
        picked = random.Random(1000 + i).sample(ids, 2)
        conn.execute(
            "UPDATE projects SET status = CASE status WHEN 'active' THEN 'archived' ELSE 'active' END "
            f"WHERE id IN ({in_id_order})",
            [picked],
        )

    threads = [
        threading.Thread(target=run, args=(w,)) for w in (mover, mover, creator(a), creator(b), archiver)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []  # no deadlock, no serialization failure
    assert_invariants()


# One statement through each of the two functions that lock usage_tracking rows: a bulk event insert
# (usage_tracking_add) and a bulk project insert (usage_tracking_add_active), both for customers x and y.
LOCKING_STATEMENTS = {
    "events": "INSERT INTO usage_events (customer_id, metric, quantity) VALUES (%(x)s, 'minutes', 1), (%(y)s, 'minutes', 1)",
    "projects": "INSERT INTO projects (customer_id, name) VALUES (%(x)s, 'p'), (%(y)s, 'p')",
}


@pytest.mark.parametrize("first, second", [("events", "projects"), ("projects", "events")])
def test_the_two_counter_locking_functions_run_against_each_other_never_deadlock(first, second):
    """Both functions lock counter rows in one global order. The overlap is forced: a third
    transaction holds x's row, ``first`` queues for it, then ``second`` starts; were ``second`` to
    lock y before x, it would hold y while ``first`` (granted x next) waits for y: a deadlock."""
    x, y = sorted(c.pk for c in CustomerFactory.create_batch(2))
    for customer_id in (x, y):  # open both counter rows
        ProjectFactory(customer_id=customer_id)
    errors = []

    def run(conn, statement):
        try:
            with conn.transaction():
                conn.execute(LOCKING_STATEMENTS[statement], {"x": x, "y": y})
        except Exception as exc:  # a deadlock is reported here
            errors.append(exc)

    with raw_connect() as holder, raw_connect() as a, raw_connect() as b:
        with holder.transaction():
            holder.execute(
                "SELECT 1 FROM usage_tracking WHERE customer_id = %s AND period_start <= now() AND period_end > now() "
                "FOR UPDATE",
                [x],
            )
            thread_a = threading.Thread(target=run, args=(a, first))
            thread_a.start()
            assert blocked_by(holder.info.backend_pid, unless=thread_a) == a.info.backend_pid
            thread_b = threading.Thread(target=run, args=(b, second))
            thread_b.start()
            assert waiting(b.info.backend_pid, unless=thread_b)
        thread_a.join(60)
        thread_b.join(60)
    assert errors == []
    assert active_counts([x, y]) == {x: 2, y: 2}
    assert_invariants()


def test_a_use_removed_while_a_newer_one_is_added_keeps_last_used_at():
    """Removing a use recounts last_used_at; a newer use added by a transaction that commits while
    the removal waits for the preset row must be in that recount (lock first, then recount)."""
    preset = PresetFactory()
    now = timezone.now()
    older, _ = (PresetUsageFactory(preset=preset, used_at=now - timedelta(hours=h)) for h in (3, 2))
    errors = []

    def remove_older(conn):
        try:
            conn.execute("DELETE FROM preset_usage WHERE id = %s", [older.pk])
        except Exception as exc:  # reported below
            errors.append(exc)

    with raw_connect() as adder, raw_connect(autocommit=True) as remover:
        with adder.transaction():
            adder.execute(
                "INSERT INTO preset_usage (preset_id, customer_id, used_at) VALUES (%s, %s, %s)",
                [preset.pk, preset.customer_id, now],
            )
            removal = threading.Thread(target=remove_older, args=(remover,))
            removal.start()
            assert blocked_by(adder.info.backend_pid, unless=removal) == remover.info.backend_pid
        removal.join(60)
    assert errors == []
    preset.refresh_from_db()
    assert (preset.usage_count, preset.last_used_at) == (2, now)
    assert_invariants()


def test_a_delta_whose_period_row_appears_with_other_bounds_fails_the_statement_for_a_retry():
    """A writer creating the current-period row waits on a concurrent transaction that opens an
    overlapping period with other bounds: its delta has no row to land on, so the statement fails
    with serialization_failure (the client retries) instead of losing the delta silently."""
    customer = CustomerFactory()
    customer.refresh_from_db()
    start, end = customer.current_period_start, customer.current_period_end
    outcome = []

    def create_project(conn):
        try:
            conn.execute("INSERT INTO projects (customer_id, name) VALUES (%s, 'first')", [customer.pk])
            outcome.append("created")
        except psycopg.errors.SerializationFailure as exc:
            outcome.append(exc.sqlstate)

    with raw_connect() as opener, raw_connect(autocommit=True) as writer:
        with opener.transaction():
            opener.execute(
                "SELECT usage_tracking_open(%s, %s, %s)",
                [customer.pk, start + timedelta(hours=1), end + timedelta(hours=1)],
            )
            creation = threading.Thread(target=create_project, args=(writer,))
            creation.start()
            assert blocked_by(opener.info.backend_pid, unless=creation) == writer.info.backend_pid
        creation.join(60)
        assert outcome == ["40001"]
        create_project(writer)  # the retry lands on the row the other transaction opened
    assert outcome == ["40001", "created"]
    assert_invariants()
