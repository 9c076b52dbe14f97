"""Invariants I1-I3 and I5 (SPEC §4) across every write path the product and operators use."""

from datetime import timedelta
from decimal import Decimal

import pgtrigger
import pytest
from django.db import IntegrityError, connection
from django.db.models import Count, Max
from django.utils import timezone

from tests.conftest import active_count, raises_sqlstate
from tests.factories import (
    CustomerFactory,
    PresetFactory,
    PresetUsageFactory,
    ProjectFactory,
    UsageEventFactory,
)
from tests.referee import assert_invariants, drifted_checks
from usage.models import Customer, Preset, PresetUsage, Project, UsageEvent, UsageTracking
from usage.services.counters import counter_writes_allowed

pytestmark = pytest.mark.django_db

ACTIVE, ARCHIVED = Project.Status.ACTIVE, Project.Status.ARCHIVED
GUARDED = (
    r"^usage counters on (usage_tracking|presets) are maintained by triggers and cannot be written directly\n"
)


def sql(statement, params=None):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def metered(customer, when=None):
    """(ai_interactions_count, minutes_used) of the period row that contains ``when`` (default now)."""
    when = when or timezone.now()
    row = (
        UsageTracking.objects.filter(customer=customer, period_start__lte=when, period_end__gt=when)
        .values_list("ai_interactions_count", "minutes_used")
        .first()
    )
    return row or (0, 0)


# --- I1: active projects -----------------------------------------------------------------------------


class TestActiveProjects:
    def test_orm_create_and_delete(self, customer):
        projects = [ProjectFactory(customer=customer) for _ in range(3)]
        assert active_count(customer) == 3
        projects[0].delete()
        assert active_count(customer) == 2
        assert_invariants()

    def test_status_flip_back_and_forth(self, customer):
        project = ProjectFactory(customer=customer)
        for status, expected in [(ARCHIVED, 0), (ACTIVE, 1), (ARCHIVED, 0), (ACTIVE, 1), (ACTIVE, 1)]:
            project.status = status
            project.save()
            assert active_count(customer) == expected
        assert_invariants()

    def test_archived_projects_do_not_count(self, customer):
        ProjectFactory(customer=customer, status=ARCHIVED)
        ProjectFactory(customer=customer)
        assert active_count(customer) == 1
        Project.objects.filter(customer=customer, status=ARCHIVED).delete()
        assert active_count(customer) == 1

    def test_bulk_create_update_delete(self):
        customers = CustomerFactory.create_batch(5)
        Project.objects.bulk_create([Project(customer=c, name=f"p{i}") for c in customers for i in range(4)])
        assert [active_count(c) for c in customers] == [4] * 5
        Project.objects.filter(customer__in=customers[:2]).update(status=ARCHIVED)
        assert [active_count(c) for c in customers] == [0, 0, 4, 4, 4]
        Project.objects.filter(customer=customers[2]).delete()
        assert [active_count(c) for c in customers] == [0, 0, 0, 4, 4]
        assert_invariants()

    def test_raw_sql_from_another_service(self, customer):
        sql(
            "INSERT INTO projects (customer_id, name) SELECT %s, 'raw ' || g FROM generate_series(1, 7) g",
            [customer.pk],
        )
        assert active_count(customer) == 7
        sql(
            "UPDATE projects SET status = 'archived' WHERE customer_id = %s AND name IN ('raw 1', 'raw 2')",
            [customer.pk],
        )
        assert active_count(customer) == 5
        sql("DELETE FROM projects WHERE customer_id = %s AND name = 'raw 3'", [customer.pk])
        assert active_count(customer) == 4
        assert_invariants()

    def test_project_moved_to_another_customer(self):
        a, b = CustomerFactory.create_batch(2)
        project = ProjectFactory(customer=a)
        ProjectFactory(customer=b)
        project.customer = b
        project.save()
        assert (active_count(a), active_count(b)) == (0, 2)
        # Move and archive in one statement: the old owner loses it, the new one does not gain it.
        sql("UPDATE projects SET customer_id = %s, status = 'archived' WHERE id = %s", [a.pk, project.pk])
        assert (active_count(a), active_count(b)) == (0, 1)
        assert_invariants()

    def test_first_write_of_a_period_creates_the_row_with_the_live_gauge(self, customer):
        # History written before tracking existed: two active projects, no counter row at all.
        with pgtrigger.ignore("usage.Project:projects_on_insert"):
            ProjectFactory.create_batch(2, customer=customer)
        assert not UsageTracking.objects.filter(customer=customer).exists()
        ProjectFactory(customer=customer)
        row = UsageTracking.objects.get(customer=customer)
        assert row.active_projects_count == 3
        assert (row.period_start, row.period_end) == (
            customer.current_period_start,
            customer.current_period_end,
        )
        assert row.month == customer.current_period_start.strftime("%Y-%m")
        assert_invariants()

    def test_first_write_after_the_period_ended_opens_the_next_period(self, customer):
        now = timezone.now()
        # The customer's period ended two months ago and was never rolled over.
        Customer.objects.filter(pk=customer.pk).update(
            current_period_start=now - timedelta(days=100), current_period_end=now - timedelta(days=70)
        )
        ProjectFactory(customer=customer)
        row = UsageTracking.objects.get(customer=customer)
        assert row.period_start <= now < row.period_end
        assert row.active_projects_count == 1

    def test_customer_deleted_with_orm_and_raw_sql(self):
        a, b = CustomerFactory.create_batch(2)
        ProjectFactory.create_batch(2, customer=a)
        ProjectFactory.create_batch(2, customer=b)
        UsageEventFactory(customer=a)
        PresetUsageFactory(preset=PresetFactory(customer=a))
        a.delete()
        sql("DELETE FROM customers WHERE id = %s", [b.pk])
        assert not UsageTracking.objects.exists()
        assert not Project.objects.exists()
        assert_invariants()

    @pytest.mark.django_db(transaction=True)  # the foreign keys are checked at the commit
    def test_customer_with_events_deleted_in_raw_sql_takes_every_row_with_it(self):
        # 0002 makes every usage foreign key cascade; 0006 re-created usage_events' without it, so
        # the product's raw DELETE of a customer who had used anything failed at the commit.
        gone, kept = CustomerFactory.create_batch(2)
        for c in (gone, kept):
            ProjectFactory(customer=c)
            UsageEventFactory(customer=c)
            PresetUsageFactory(preset=PresetFactory(customer=c))
        sql("DELETE FROM customers WHERE id = %s", [gone.pk])
        assert set(UsageEvent.objects.values_list("customer_id", flat=True)) == {kept.pk}
        assert set(UsageTracking.objects.values_list("customer_id", flat=True)) == {kept.pk}
        assert set(PresetUsage.objects.values_list("customer_id", flat=True)) == {kept.pk}
        assert_invariants()

    @pytest.mark.django_db(transaction=True)  # TRUNCATE refuses pending deferred FK checks
    def test_truncate_is_maintained(self):
        customers = CustomerFactory.create_batch(2)
        for c in customers:
            ProjectFactory.create_batch(2, customer=c)
        sql("TRUNCATE projects")
        assert [active_count(c) for c in customers] == [0, 0]
        assert_invariants()


# --- I2: metered usage --------------------------------------------------------------------------------


class TestMeteredUsage:
    def test_events_sum_into_the_current_period(self, customer):
        UsageEventFactory(customer=customer, quantity=2)
        UsageEventFactory(customer=customer, metric=UsageEvent.Metric.MINUTES, quantity=Decimal("1.5"))
        UsageEventFactory(customer=customer, metric=UsageEvent.Metric.MINUTES, quantity=3)
        assert metered(customer) == (2, Decimal("4.5"))
        assert_invariants()

    def test_late_event_lands_in_its_own_earlier_period(self, customer):
        now = timezone.now()
        UsageEventFactory(customer=customer, quantity=5)
        late = customer.current_period_start - timedelta(days=3)
        UsageEventFactory(customer=customer, quantity=7, occurred_at=late)
        assert metered(customer) == (5, 0)
        assert metered(customer, late) == (7, 0)
        earlier = UsageTracking.objects.get(customer=customer, period_start__lte=late, period_end__gt=late)
        assert earlier.period_end == customer.current_period_start  # adjacent, not overlapping
        # A second late event into an existing past row adds to it.
        UsageEventFactory(customer=customer, quantity=1, occurred_at=late + timedelta(hours=1))
        assert metered(customer, late) == (8, 0)
        assert metered(customer, now) == (5, 0)
        assert_invariants()

    def test_an_event_exactly_at_the_period_start_counts_in_that_period_only(self, customer):
        start = customer.current_period_start
        UsageEventFactory(
            customer=customer, quantity=2, occurred_at=start - timedelta(days=3)
        )  # the previous period
        UsageEventFactory(customer=customer, quantity=1)  # both period rows exist now
        UsageEventFactory(customer=customer, quantity=5, occurred_at=start)  # one event: the fast path
        assert metered(customer, start) == (6, 0)
        assert metered(customer, start - timedelta(microseconds=1)) == (2, 0)
        UsageEvent.objects.bulk_create(
            [  # several events: the general path
                UsageEvent(customer=customer, metric="minutes", quantity=q, occurred_at=start) for q in (1, 2)
            ]
        )
        assert metered(customer, start) == (6, 3)
        assert metered(customer, start - timedelta(microseconds=1)) == (2, 0)
        assert_invariants()

    def test_a_late_event_exactly_where_a_past_period_ends_opens_the_next_period(self, customer):
        UsageEventFactory(
            customer=customer, quantity=1, occurred_at=customer.current_period_start - timedelta(days=50)
        )
        past = UsageTracking.objects.get(customer=customer)
        UsageEventFactory(customer=customer, quantity=3, occurred_at=past.period_end)
        following = UsageTracking.objects.get(customer=customer, period_start=past.period_end)
        past.refresh_from_db()
        assert (past.ai_interactions_count, following.ai_interactions_count) == (1, 3)
        assert following.period_end <= customer.current_period_start
        assert_invariants()

    def test_event_moved_between_periods_and_deleted(self, customer):
        event = UsageEventFactory(customer=customer, quantity=4)
        old = customer.current_period_start - timedelta(days=40)
        event.occurred_at = old
        event.save()
        assert metered(customer) == (0, 0)
        assert metered(customer, old) == (4, 0)
        event.metric = UsageEvent.Metric.MINUTES
        event.save()
        assert metered(customer, old) == (0, 4)
        event.delete()
        assert metered(customer, old) == (0, 0)
        assert_invariants()

    def test_bulk_and_raw_sql_across_customers_and_periods(self):
        customers = CustomerFactory.create_batch(4)
        now = timezone.now()
        UsageEvent.objects.bulk_create(
            [
                UsageEvent(
                    customer=c, metric="ai_interaction", quantity=1, occurred_at=now - timedelta(days=d)
                )
                for c in customers
                for d in (0, 35, 70)
            ]
        )
        sql(
            "INSERT INTO usage_events (customer_id, metric, quantity) SELECT id, 'minutes', 2 FROM customers WHERE id = ANY(%s)",
            [[c.pk for c in customers]],
        )
        for c in customers:
            assert metered(c) == (1, 2)
        UsageEvent.objects.filter(customer=customers[0]).update(quantity=3)
        UsageEvent.objects.filter(customer=customers[1]).delete()
        assert metered(customers[0]) == (3, 3)
        assert metered(customers[1]) == (0, 0)
        assert_invariants()

    def test_negative_adjustment_needs_a_reason(self, customer):
        UsageEventFactory(customer=customer, quantity=10)
        UsageEventFactory(customer=customer, quantity=-3, reason="double-counted import, ticket 4411")
        assert metered(customer) == (7, 0)
        with raises_sqlstate(
            IntegrityError, "23514", match="usage_events_quantity_positive_or_reasoned_adjustment"
        ):
            UsageEventFactory(customer=customer, quantity=-3)
        with raises_sqlstate(
            IntegrityError, "23514", match="usage_events_quantity_positive_or_reasoned_adjustment"
        ):
            UsageEventFactory(customer=customer, quantity=0)
        with raises_sqlstate(IntegrityError, "23514", match="usage_events_metric_valid"):
            UsageEventFactory(customer=customer, metric="tokens")
        assert metered(customer) == (7, 0)
        assert_invariants()

    def test_idempotency_key_is_unique_per_customer(self, customer):
        UsageEventFactory(customer=customer, idempotency_key="req-1")
        UsageEventFactory(idempotency_key="req-1")  # another customer may reuse it
        with raises_sqlstate(IntegrityError, "23505", match="usage_events_idempotency_key_per_customer"):
            UsageEventFactory(customer=customer, idempotency_key="req-1")
        assert metered(customer) == (1, 0)

    @pytest.mark.django_db(transaction=True)  # TRUNCATE refuses pending deferred FK checks
    def test_truncate_is_maintained(self, customer):
        UsageEventFactory(customer=customer, quantity=5)
        UsageEventFactory(customer=customer, metric=UsageEvent.Metric.MINUTES, quantity=2)
        UsageEventFactory(
            customer=customer, quantity=1, occurred_at=customer.current_period_start - timedelta(days=40)
        )
        sql("TRUNCATE usage_events")
        assert metered(customer, customer.current_period_start - timedelta(days=40)) == (0, 0)
        assert metered(customer) == (0, 0)
        assert_invariants()


# --- I3: presets (S3) ---------------------------------------------------------------------------------


class TestPresets:
    def test_each_use_counts_once_and_moves_last_used_at(self):
        preset = PresetFactory()
        start = timezone.now() - timedelta(hours=5)
        uses = [PresetUsageFactory(preset=preset, used_at=start + timedelta(hours=h)) for h in range(3)]
        preset.refresh_from_db()
        assert (preset.usage_count, preset.last_used_at) == (3, uses[2].used_at)

        uses[2].delete()  # the latest use: last_used_at goes back to the previous one
        preset.refresh_from_db()
        assert (preset.usage_count, preset.last_used_at) == (2, uses[1].used_at)

        uses[0].delete()  # an older use: last_used_at stays
        preset.refresh_from_db()
        assert (preset.usage_count, preset.last_used_at) == (1, uses[1].used_at)

        uses[1].delete()
        preset.refresh_from_db()
        assert (preset.usage_count, preset.last_used_at) == (0, None)
        assert_invariants()

    @pytest.mark.django_db(transaction=True)  # TRUNCATE refuses pending deferred FK checks
    def test_bulk_raw_move_and_truncate(self):
        a, b = PresetFactory.create_batch(2)
        PresetUsage.objects.bulk_create(
            [PresetUsage(preset=a, customer=a.customer, used_at=timezone.now()) for _ in range(4)]
        )
        sql(
            "INSERT INTO preset_usage (preset_id, customer_id) SELECT %s, %s FROM generate_series(1, 3)",
            [b.pk, b.customer_id],
        )
        moved = PresetUsage.objects.filter(preset=a).order_by("used_at").first()
        PresetUsage.objects.filter(pk=moved.pk).update(preset=b)
        counts = dict(Preset.objects.values_list("pk", "usage_count"))
        assert (counts[a.pk], counts[b.pk]) == (3, 4)
        assert_invariants()
        sql("TRUNCATE preset_usage")
        assert list(Preset.objects.values_list("usage_count", "last_used_at")) == [(0, None), (0, None)]

    def test_orm_use_refreshes_the_preset_instance_django_holds(self):
        preset = PresetFactory()
        use = PresetUsage.objects.create(preset=preset, customer=preset.customer)
        assert preset.usage_count == 1  # refreshed by the signal handler, counted by the trigger
        assert preset.last_used_at == use.used_at
        use.delete()
        assert (preset.usage_count, preset.last_used_at) == (0, None)


# --- I5: nothing but the triggers (and reconciliation) writes a counter -------------------------------


class TestCountersAreProtected:
    def test_direct_counter_writes_are_refused(self, customer):
        ProjectFactory(customer=customer)
        preset = PresetFactory(customer=customer)
        for statement in [
            "UPDATE usage_tracking SET active_projects_count = 99",
            "UPDATE usage_tracking SET minutes_used = minutes_used + 1",
            "UPDATE presets SET usage_count = usage_count + 1",
            "UPDATE presets SET last_used_at = now()",
        ]:
            with raises_sqlstate(IntegrityError, "23514", match=GUARDED):
                sql(statement)
        with raises_sqlstate(IntegrityError, "23514", match=GUARDED):
            UsageTracking.objects.create(
                customer=customer,
                period_start=timezone.now() - timedelta(days=400),
                period_end=timezone.now() - timedelta(days=370),
                month="2025-01",
            )
        with raises_sqlstate(IntegrityError, "23514", match=GUARDED):
            Preset.objects.create(customer=customer, name="x", usage_count=5)
        assert active_count(customer) == 1
        preset.refresh_from_db()
        assert preset.usage_count == 0

    def test_saving_a_stale_instance_never_overwrites_a_counter(self):
        preset = PresetFactory()
        stale = Preset.objects.get(pk=preset.pk)  # loaded with usage_count 0
        PresetUsageFactory.create_batch(3, preset=preset)
        stale.name = "renamed by support"
        stale.save()
        preset.refresh_from_db()
        assert (preset.name, preset.usage_count) == ("renamed by support", 3)

    def test_reconciliation_may_write_under_its_flag(self, customer):
        ProjectFactory(customer=customer)
        with counter_writes_allowed():
            UsageTracking.objects.filter(customer=customer).update(active_projects_count=0)
        assert active_count(customer) == 0
        assert drifted_checks() == ["active_projects"]


# --- every write path changes each counter exactly once -----------------------------------------------

WRITE_PATHS = {
    "orm_save": lambda c: Project.objects.create(customer=c, name="x"),
    "bulk_create": lambda c: Project.objects.bulk_create([Project(customer=c, name="x")]),
    "raw_sql": lambda c: sql("INSERT INTO projects (customer_id, name) VALUES (%s, 'x')", [c.pk]),
    "queryset_update": lambda c: Project.objects.filter(customer=c, status=ARCHIVED).update(status=ACTIVE),
    "instance_save": lambda c: _unarchive_one(c),
}


def _unarchive_one(customer):
    project = Project.objects.get(customer=customer, status=ARCHIVED)
    project.status = ACTIVE
    project.save()


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_each_write_path_adds_exactly_one(path, customer):
    ProjectFactory(customer=customer)
    ProjectFactory(customer=customer, status=ARCHIVED)
    before = active_count(customer)
    WRITE_PATHS[path](customer)
    assert active_count(customer) == before + 1
    assert_invariants()


@pytest.mark.parametrize(
    "write",
    [
        lambda p: PresetUsage.objects.create(preset=p, customer=p.customer),
        lambda p: PresetUsage.objects.bulk_create(
            [PresetUsage(preset=p, customer=p.customer, used_at=timezone.now())]
        ),
        lambda p: sql(
            "INSERT INTO preset_usage (preset_id, customer_id) VALUES (%s, %s)", [p.pk, p.customer_id]
        ),
    ],
    ids=["orm_save", "bulk_create", "raw_sql"],
)
def test_each_preset_use_adds_exactly_one(write):
    preset = PresetFactory()
    write(preset)
    preset.refresh_from_db()
    assert preset.usage_count == 1
    agg = PresetUsage.objects.filter(preset=preset).aggregate(n=Count("id"), last=Max("used_at"))
    assert (preset.usage_count, preset.last_used_at) == (agg["n"], agg["last"])


def test_events_written_in_every_way_add_exactly_their_quantity(customer):
    UsageEvent.objects.create(customer=customer, metric="minutes", quantity=1)
    UsageEvent.objects.bulk_create(
        [UsageEvent(customer=customer, metric="minutes", quantity=2, occurred_at=timezone.now())]
    )
    sql("INSERT INTO usage_events (customer_id, metric, quantity) VALUES (%s, 'minutes', 4)", [customer.pk])
    assert metered(customer) == (0, 7)


def test_bad_writes_change_no_counter(customer):
    """A statement that fails midway leaves no partial counter (SPEC §10)."""
    ProjectFactory(customer=customer)
    with raises_sqlstate(IntegrityError, "23514", match="projects_status_valid"):
        sql(
            "INSERT INTO projects (customer_id, name, status) VALUES (%s, 'ok', 'active'), (%s, 'bad', 'deleted')",
            [customer.pk, customer.pk],
        )
    assert active_count(customer) == 1
    assert_invariants()


def test_historical_drift_never_blocks_a_product_write(customer):
    """A counter history left too low goes negative on delete, visibly, instead of failing the DELETE."""
    with pgtrigger.ignore("usage.Project:projects_on_insert"):
        ProjectFactory.create_batch(2, customer=customer)  # written before tracking existed
    ProjectFactory(customer=customer)  # opens the period row with the true count, 3
    with counter_writes_allowed():
        UsageTracking.objects.filter(customer=customer).update(active_projects_count=0)  # drifted
    Project.objects.filter(customer=customer).delete()
    assert active_count(customer) == -3
    assert drifted_checks() == ["active_projects"]
