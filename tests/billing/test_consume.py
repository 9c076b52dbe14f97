"""Consume (SPEC §5): S4 with real concurrent connections, S5 overage and rollover, S8, bad input."""

import threading
from datetime import timedelta
from decimal import Decimal

import pgtrigger
import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from billing.models import AuditLog, ConsumeRequest, CreditDraw, CreditGrant, Plan, Subscription
from billing.services.consume import (
    AMOUNT_MAX,
    BAD_AMOUNT,
    CONSUME_ERRORS,
    KEY_NOT_TEXT,
    TOO_LARGE,
    TOO_PRECISE,
    AmountNotPositive,
    AmountTooLarge,
    AmountTooPrecise,
    BadIdempotencyKey,
    ConsumeError,
    FractionOfWholeMetric,
    IdempotencyKeyReused,
    IdempotencyKeyTaken,
    NoPlan,
    UnknownCustomer,
    UnknownMetric,
    consume,
)
from billing.services.credits import (
    BAD_METRIC,
    BAD_QUANTITY,
    CREDIT_MAX,
    GOODWILL_NEEDS_REASON,
    TOO_MUCH_CREDIT,
    WHOLE_NUMBERS,
    CreditGrantError,
    credit_grant,
)
from billing.services.periods import period_roll_due
from billing.services.projects import ProjectLimitReached, project_create
from demo.data import plans_ensure
from tests.conftest import blocked_by, raises_sqlstate, raw_connect, run_manage
from tests.factories import CustomerFactory, ProjectFactory, UsageEventFactory
from tests.referee import assert_invariants
from usage.models import Project, UsageEvent, UsageTracking
from usage.services.counters import counter_writes_allowed

# The SQLSTATEs the README documents for consume's refusals (billing/sql/billing_consume.sql).
CODES = {
    UnknownCustomer: "UC001",
    UnknownMetric: "UC002",
    AmountNotPositive: "UC003",
    AmountTooPrecise: "UC004",
    AmountTooLarge: "22003",
    FractionOfWholeMetric: "UC005",
    BadIdempotencyKey: "UC006",
    IdempotencyKeyReused: "UC007",
    IdempotencyKeyTaken: "UC008",
    NoPlan: "UC009",
}


def _subscribe(customer, plan):
    return Subscription.objects.create(
        customer=customer,
        plan=plan,
        current_period_start=customer.current_period_start,
        current_period_end=customer.current_period_end,
    )


def _db_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def _table_counts():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM usage_events), (SELECT count(*) FROM credit_draws), "
            "(SELECT count(*) FROM consume_requests), (SELECT count(*) FROM usage_tracking), "
            "(SELECT coalesce(sum(remaining), 0) FROM credit_grants)"
        )
        return cursor.fetchone()


def _a_month_passes(customer, *, days):
    """Move one customer's whole history ``days`` into the past, as if that much time went by."""
    shift = timedelta(days=days)
    # The period rows move with their events, so no count changes: the event trigger stays out of it.
    with (
        transaction.atomic(),
        pgtrigger.ignore("usage.UsageEvent:usage_events_on_update"),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE usage_events SET occurred_at = occurred_at - %s WHERE customer_id = %s",
            [shift, customer.pk],
        )
        cursor.execute(
            "UPDATE credit_draws SET drawn_at = drawn_at - %s WHERE customer_id = %s", [shift, customer.pk]
        )
        cursor.execute(
            "UPDATE credit_grants SET created_at = created_at - %s WHERE customer_id = %s",
            [shift, customer.pk],
        )
        cursor.execute(
            "UPDATE subscriptions SET current_period_start = current_period_start - %s, "
            "current_period_end = current_period_end - %s WHERE customer_id = %s",
            [shift, shift, customer.pk],
        )
        cursor.execute(
            "UPDATE customers SET current_period_start = current_period_start - %s, "
            "current_period_end = current_period_end - %s WHERE id = %s",
            [shift, shift, customer.pk],
        )
        with counter_writes_allowed():
            cursor.execute(
                "UPDATE usage_tracking SET period_start = period_start - %s, period_end = period_end - %s, "
                "month = to_char((period_start - %s) AT TIME ZONE 'UTC', 'YYYY-MM') WHERE customer_id = %s",
                [shift, shift, shift, customer.pk],
            )


@pytest.mark.django_db
class TestConsume:
    def test_allowance_then_denial_names_usage_limit_plan_credit_and_remedy(self):
        plans = plans_ensure()
        Plan.objects.filter(pk=plans["free"].pk).update(ai_interactions_per_period=5)
        customer = CustomerFactory()
        first = consume(customer_id=customer.pk, metric="ai_interaction", amount=4)
        assert (
            first.allowed,
            first.new_usage,
            first.effective_limit,
            first.plan,
            first.subscription_status,
        ) == (True, Decimal("4"), Decimal("5"), "free", "none")
        denied = consume(customer_id=customer.pk, metric="ai_interaction", amount=2)
        assert not denied.allowed and denied.new_usage == 4
        assert denied.message == (
            "Denied: 4 of 5 AI interactions used this period on Free (allowance 5), and no overage credit; "
            "2 more would exceed it. Buy an overage pack of AI interactions, or upgrade to Starter (500 per period)."
        )
        assert UsageEvent.objects.filter(customer=customer).count() == 1
        assert_invariants([customer.pk])

    def test_idempotency_key_returns_the_first_answer_and_consumes_nothing(self):
        plans_ensure()
        customer = CustomerFactory()
        first = consume(customer_id=customer.pk, metric="minutes", amount="2.5", idempotency_key="req-1")
        again = consume(customer_id=customer.pk, metric="minutes", amount="2.5", idempotency_key="req-1")
        assert again == first
        assert UsageEvent.objects.filter(customer=customer).count() == 1
        tracking = UsageTracking.objects.get(customer=customer)
        assert tracking.minutes_used == Decimal("2.5")
        # A denial is remembered too: a retry is denied even after credit arrives.
        big = consume(customer_id=customer.pk, metric="minutes", amount=1000, idempotency_key="req-2")
        credit_grant(
            customer=customer, metric="minutes", quantity=2000, source="goodwill", actor="t", reason="r"
        )
        assert consume(customer_id=customer.pk, metric="minutes", amount=1000, idempotency_key="req-2") == big
        assert not big.allowed

    @pytest.mark.parametrize(
        "kwargs, error, message",
        [
            (
                dict(metric="tokens", amount=1),
                UnknownMetric,
                "unknown metric 'tokens'; metrics are: ai_interaction, minutes",
            ),
            (dict(metric="minutes", amount=0), AmountNotPositive, BAD_AMOUNT.format(quantity=0)),
            (dict(metric="minutes", amount=-3), AmountNotPositive, BAD_AMOUNT.format(quantity=-3)),
            (dict(metric="minutes", amount="lots"), AmountNotPositive, BAD_AMOUNT.format(quantity="lots")),
            (dict(metric="minutes", amount="NaN"), AmountNotPositive, BAD_AMOUNT.format(quantity="NaN")),
            (
                dict(metric="minutes", amount="0.0001"),
                AmountTooPrecise,
                TOO_PRECISE.format(quantity="0.0001"),
            ),
            (
                dict(metric="minutes", amount="1e-5000"),
                AmountTooPrecise,
                TOO_PRECISE.format(quantity="1e-5000"),
            ),
            (
                dict(metric="minutes", amount=10**15),
                AmountTooLarge,
                TOO_LARGE.format(quantity=10**15, maximum=AMOUNT_MAX),
            ),
            (
                dict(metric="minutes", amount="1E+5000"),
                AmountTooLarge,
                TOO_LARGE.format(quantity="1E+5000", maximum=AMOUNT_MAX),
            ),
            (
                dict(metric="ai_interaction", amount="1.5"),
                FractionOfWholeMetric,
                "AI interactions are counted in whole numbers, not 1.5",
            ),
            (
                dict(metric="minutes", amount=1, idempotency_key=""),
                BadIdempotencyKey,
                "idempotency key must be 1 to 200 characters",
            ),
            (
                dict(metric="minutes", amount=1, idempotency_key="x" * 201),
                BadIdempotencyKey,
                "idempotency key must be 1 to 200 characters",
            ),
            # A bare DataError from the driver before (PostgreSQL text cannot hold a NUL).
            (dict(metric="minutes", amount=1, idempotency_key="job\x007"), BadIdempotencyKey, KEY_NOT_TEXT),
            (dict(metric="minutes", amount=1, idempotency_key=7), BadIdempotencyKey, KEY_NOT_TEXT),
        ],
    )
    def test_bad_arguments_raise_and_write_nothing(self, kwargs, error, message):
        plans_ensure()
        customer = CustomerFactory()
        before = _table_counts()
        with pytest.raises(error) as raised:
            consume(customer_id=customer.pk, **kwargs)
        assert str(raised.value) == message
        assert isinstance(raised.value, ConsumeError) and raised.value.sqlstate == CODES[error]
        assert _table_counts() == before

    def test_every_refusal_has_its_own_class_and_sqlstate(self):
        """SPEC §10: each failure of consume with its own SQLSTATE (most shared 22023 before)."""
        assert len(CONSUME_ERRORS) == len(CODES) == len(set(CODES.values())) == 10
        assert {cls: cls.sqlstate for cls in CONSUME_ERRORS.values()} == CODES

    def test_unknown_customer_and_reused_key_raise_and_write_nothing(self):
        plans_ensure()
        customer = CustomerFactory()
        with pytest.raises(UnknownCustomer) as raised:
            consume(customer_id="00000000-0000-0000-0000-000000000001", metric="minutes", amount=1)
        assert str(raised.value) == "no customer with id 00000000-0000-0000-0000-000000000001"
        assert raised.value.sqlstate == "UC001"
        with pytest.raises(UnknownCustomer) as raised:
            consume(customer_id="not-a-uuid", metric="minutes", amount=1)
        assert str(raised.value) == "no customer with id 'not-a-uuid' (not a UUID)"
        consume(customer_id=customer.pk, metric="minutes", amount=1, idempotency_key="k")
        before = _table_counts()
        for metric, amount in (("minutes", 2), ("ai_interaction", 1)):
            with pytest.raises(IdempotencyKeyReused) as raised:
                consume(customer_id=customer.pk, metric=metric, amount=amount, idempotency_key="k")
            assert str(raised.value) == (
                "idempotency key 'k' was first used to consume 1 minutes; a retry must repeat the same metric and amount"
            )
        assert _table_counts() == before

    def test_no_live_subscription_and_no_free_plan_is_its_own_error(self):
        plans_ensure()
        customer = CustomerFactory()
        Plan.objects.filter(code="free").delete()
        before = _table_counts()
        with pytest.raises(NoPlan) as raised:
            consume(customer_id=customer.pk, metric="minutes", amount=1, idempotency_key="k")
        assert (
            str(raised.value) == f"customer {customer.pk} has no live subscription and there is no free plan"
        )
        assert raised.value.sqlstate == "UC009"
        assert _table_counts() == before

    def test_sql_callers_get_the_same_row_and_errors(self):
        """Another service calls billing_consume over SQL: one row with the seven columns of §5."""
        plans_ensure()
        customer = CustomerFactory()
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM billing_consume(%s, 'ai_interaction', 3, 'sql-1')", [customer.pk])
            assert [c.name for c in cursor.description] == [
                "allowed",
                "new_usage",
                "effective_limit",
                "plan",
                "subscription_status",
                "credits_remaining",
                "message",
            ]
            assert cursor.fetchone()[:4] == (True, Decimal("3"), Decimal("50"), "free")

    @pytest.mark.parametrize(
        "customer, metric, amount, key, sqlstate, message",
        [
            (
                "nobody",
                "minutes",
                1,
                None,
                "UC001",
                "no customer with id 00000000-0000-0000-0000-000000000001",
            ),
            (None, "minutes", 1, None, "UC001", "no customer with id NULL"),
            (
                "it",
                "tokens",
                1,
                None,
                "UC002",
                "unknown metric 'tokens'; metrics are ai_interaction and minutes",
            ),
            ("it", None, 1, None, "UC002", "unknown metric NULL; metrics are ai_interaction and minutes"),
            ("it", "minutes", 0, None, "UC003", "amount must be a positive number, not 0"),
            ("it", "minutes", -2, None, "UC003", "amount must be a positive number, not -2"),
            ("it", "minutes", None, None, "UC003", "amount must be a positive number, not NULL"),
            ("it", "minutes", "0.0001", None, "UC004", "amount 0.0001 has more than 3 decimals"),
            (
                "it",
                "minutes",
                10**15,
                None,
                "22003",
                "amount is too large (at most 999,999,999,999,999.999 per call)",
            ),
            (
                "it",
                "minutes",
                "1e5000",
                None,
                "22003",
                "amount is too large (at most 999,999,999,999,999.999 per call)",
            ),
            (
                "it",
                "ai_interaction",
                "1.5",
                None,
                "UC005",
                "AI interactions are counted in whole numbers, not 1.5",
            ),
            ("it", "minutes", 1, "", "UC006", "idempotency key must be 1 to 200 characters"),
            ("it", "minutes", 1, "k" * 201, "UC006", "idempotency key must be 1 to 200 characters"),
            (
                "it",
                "minutes",
                2,
                "taken",
                "UC007",
                "idempotency key 'taken' was first used to consume 1 minutes; a retry must repeat the same metric and amount",
            ),
            (
                "it",
                "minutes",
                1,
                "product-wrote-it",
                "UC008",
                "idempotency key 'product-wrote-it' is already taken by a usage event written without "
                "billing_consume; use a new key",
            ),
            (
                "no-plan",
                "minutes",
                1,
                None,
                "UC009",
                "customer {id} has no live subscription and there is no free plan",
            ),
        ],
    )
    def test_sql_callers_bad_arguments_each_have_their_sqlstate_and_write_nothing(
        self, customer, metric, amount, key, sqlstate, message
    ):
        plans_ensure()
        it = CustomerFactory()
        consume(customer_id=it.pk, metric="minutes", amount=1, idempotency_key="taken")
        # The product's own write of a usage event, with a key its consume call reuses (was a raw 23505).
        UsageEvent.objects.create(
            customer=it, metric="minutes", quantity=1, idempotency_key="product-wrote-it"
        )
        if customer == "no-plan":
            Plan.objects.filter(code="free").delete()
        customer_id = {"nobody": "00000000-0000-0000-0000-000000000001", None: None}.get(customer, str(it.pk))
        before = _table_counts()
        with pytest.raises(DatabaseError) as raised, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT * FROM billing_consume(%s::uuid, %s, %s::numeric, %s)",
                [customer_id, metric, amount, key],
            )
        assert raised.value.__cause__.sqlstate == sqlstate
        assert raised.value.__cause__.diag.message_primary == message.format(id=it.pk)
        assert _table_counts() == before

    def test_a_key_taken_by_a_product_event_is_a_consume_error(self):
        plans_ensure()
        customer = CustomerFactory()
        UsageEvent.objects.create(customer=customer, metric="minutes", quantity=2, idempotency_key="job-7")
        before = _table_counts()
        with pytest.raises(
            IdempotencyKeyTaken, match="'job-7' is already taken by a usage event written without"
        ):
            consume(customer_id=customer.pk, metric="minutes", amount=1, idempotency_key="job-7")
        assert _table_counts() == before

    def test_amounts_and_answers_are_normalized(self):
        """An amount with 1,000 trailing zeros was echoed as a 1,000-digit new_usage."""
        plans = plans_ensure()
        customer = CustomerFactory()
        _subscribe(customer, plans["starter"])
        amount = "2." + "0" * 1000
        first = consume(customer_id=customer.pk, metric="minutes", amount=amount, idempotency_key="z")
        again = consume(customer_id=customer.pk, metric="minutes", amount=amount, idempotency_key="z")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT * FROM billing_consume(%s, 'minutes', %s::numeric, NULL)", [customer.pk, amount]
            )
            sql = cursor.fetchone()
        for answer in (first, again):
            assert (str(answer.new_usage), str(answer.effective_limit), str(answer.credits_remaining)) == (
                "2",
                "600",
                "0",
            )
            assert answer.message == "Allowed: 2 of 600 transcription minutes used this period on Starter."
        assert (str(sql[1]), str(sql[2])) == ("4", "600")
        assert "Allowed: 4 of 600" in sql[6]

    def test_unlimited_plan_always_allows(self):
        plans = plans_ensure()
        customer = CustomerFactory()
        _subscribe(customer, plans["pro"])
        result = consume(customer_id=customer.pk, metric="minutes", amount=10**6)
        assert result.allowed and result.effective_limit is None and result.plan == "pro"
        assert result.subscription_status == "active"


@pytest.mark.django_db
class TestOverageS5:
    def test_s5_credits_draw_beyond_allowance_persist_across_rollover_and_denial_says_what_to_buy(self):
        plans = plans_ensure()
        Plan.objects.filter(pk=plans["starter"].pk).update(minutes_per_period=100)
        now = timezone.now()
        customer = CustomerFactory(
            current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20)
        )
        _subscribe(customer, plans["starter"])
        grant = credit_grant(
            customer=customer, metric="minutes", quantity=50, source="purchase", actor="test"
        )
        assert grant.remaining == 50

        result = consume(customer_id=customer.pk, metric="minutes", amount=120)
        assert result.allowed and result.new_usage == 120 and result.credits_remaining == 30
        assert result.effective_limit == 150
        grant.refresh_from_db()
        assert grant.remaining == 30
        assert list(CreditDraw.objects.values_list("quantity", flat=True)) == [Decimal("20")]

        # The next period: allowance back to 100, credits still 30. Age the first period (events,
        # then the period row and the customer's period) so that it ended a second ago.
        UsageEvent.objects.filter(customer=customer).update(occurred_at=now - timedelta(days=1))
        with counter_writes_allowed(), connection.cursor() as cursor:
            cursor.execute(
                "UPDATE usage_tracking SET period_start = %s, period_end = %s WHERE customer_id = %s",
                [now - timedelta(days=40), now - timedelta(seconds=1), customer.pk],
            )
        type(customer).objects.filter(pk=customer.pk).update(
            current_period_start=now - timedelta(days=40), current_period_end=now - timedelta(seconds=1)
        )
        assert_invariants([customer.pk])
        assert period_roll_due(actor="test") == 1
        assert period_roll_due(actor="test") == 0  # idempotent
        current = UsageTracking.objects.get(customer=customer, period_start__lte=now, period_end__gt=now)
        assert current.minutes_used == 0
        result = consume(customer_id=customer.pk, metric="minutes", amount=100)
        assert result.allowed and result.new_usage == 100 and result.credits_remaining == 30
        assert result.effective_limit == 130

        result = consume(customer_id=customer.pk, metric="minutes", amount=30)
        assert result.allowed and result.credits_remaining == 0
        denied = consume(customer_id=customer.pk, metric="minutes", amount=10)
        assert not denied.allowed
        assert (
            "130 of 130 transcription minutes used this period on Starter (allowance 100)" in denied.message
        )
        assert "the overage credit is used up (0 left)" in denied.message
        assert "Buy an overage pack of transcription minutes, or upgrade to Growth" in denied.message
        assert AuditLog.objects.filter(customer_id=customer.pk, action="period_rollover").count() == 1
        assert_invariants([customer.pk])

    def test_credits_draw_earliest_expiry_first_then_oldest_and_skip_expired(self):
        plans = plans_ensure()
        Plan.objects.filter(pk=plans["free"].pk).update(ai_interactions_per_period=0)
        customer = CustomerFactory()
        now = timezone.now()
        never = credit_grant(
            customer=customer, metric="ai_interaction", quantity=5, source="purchase", actor="t"
        )
        later = credit_grant(
            customer=customer,
            metric="ai_interaction",
            quantity=5,
            source="purchase",
            actor="t",
            expires_at=now + timedelta(days=30),
        )
        soon = credit_grant(
            customer=customer,
            metric="ai_interaction",
            quantity=2,
            source="purchase",
            actor="t",
            expires_at=now + timedelta(days=1),
        )
        expired = credit_grant(
            customer=customer,
            metric="ai_interaction",
            quantity=9,
            source="purchase",
            actor="t",
            expires_at=now - timedelta(days=1),
        )
        result = consume(customer_id=customer.pk, metric="ai_interaction", amount=8)
        assert result.allowed and result.credits_remaining == 4
        remaining = {g.pk: g.remaining for g in CreditGrant.objects.filter(customer=customer)}
        assert (remaining[soon.pk], remaining[later.pk], remaining[never.pk], remaining[expired.pk]) == (
            0,
            0,
            4,
            9,
        )
        assert_invariants([customer.pk])

    def test_credit_bought_in_the_last_period_survives_a_real_rollover(self):
        """S5 across a rollover whose new period starts after the grant was made: credits persist."""
        plans = plans_ensure()
        Plan.objects.filter(pk=plans["starter"].pk).update(minutes_per_period=100)
        now = _db_now()
        customer = CustomerFactory(
            current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20)
        )
        _subscribe(customer, plans["starter"])
        grant = credit_grant(
            customer=customer, metric="minutes", quantity=50, source="purchase", actor="test"
        )
        assert consume(customer_id=customer.pk, metric="minutes", amount=120).credits_remaining == 30

        _a_month_passes(customer, days=30)
        assert period_roll_due(actor="cron") == 1
        customer.refresh_from_db()
        grant.refresh_from_db()
        assert grant.created_at < customer.current_period_start <= now  # bought in the period that ended

        result = consume(customer_id=customer.pk, metric="minutes", amount=100)
        assert (result.allowed, result.new_usage, result.effective_limit, result.credits_remaining) == (
            True,
            100,
            130,
            30,
        )
        result = consume(customer_id=customer.pk, metric="minutes", amount=30)
        assert (result.allowed, result.credits_remaining) == (True, 0)
        grant.refresh_from_db()
        assert grant.remaining == 0
        assert_invariants([customer.pk])

    def test_a_rollover_carries_the_active_projects_and_restarts_metered_usage(self):
        plans_ensure()
        now = _db_now()
        customer = CustomerFactory(
            current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20)
        )
        ProjectFactory.create_batch(3, customer=customer)
        ProjectFactory(customer=customer, status=Project.Status.ARCHIVED)
        consume(customer_id=customer.pk, metric="minutes", amount=7)
        _a_month_passes(customer, days=30)
        assert period_roll_due(actor="cron") == 1
        customer.refresh_from_db()
        row = UsageTracking.objects.get(customer=customer, period_start=customer.current_period_start)
        assert (row.active_projects_count, row.minutes_used, row.ai_interactions_count) == (3, 0, 0)
        assert_invariants([customer.pk])

    def test_a_partial_draw_takes_the_earliest_expiry_first_then_the_oldest(self):
        """Only part of the credit is drawn, so the order shows: earliest expiry, then oldest grant."""
        plans = plans_ensure()
        Plan.objects.filter(pk=plans["free"].pk).update(ai_interactions_per_period=0)
        customer = CustomerFactory()
        now = _db_now()

        def grant(expires_at=None, bought_days_ago=0):
            made = credit_grant(
                customer=customer,
                metric="ai_interaction",
                quantity=5,
                source="purchase",
                actor="t",
                expires_at=expires_at,
            )
            CreditGrant.objects.filter(pk=made.pk).update(created_at=now - timedelta(days=bought_days_ago))
            return made.pk

        newest_never = grant(bought_days_ago=1)
        oldest_never = grant(bought_days_ago=9)
        later = grant(expires_at=now + timedelta(days=30))
        soon = grant(expires_at=now + timedelta(days=2))
        order = [soon, later, oldest_never, newest_never]

        def remaining():
            left = dict(CreditGrant.objects.filter(customer=customer).values_list("pk", "remaining"))
            return [left[pk] for pk in order]

        for amount, expected in ((3, [2, 5, 5, 5]), (4, [0, 3, 5, 5]), (4, [0, 0, 4, 5]), (5, [0, 0, 0, 4])):
            assert consume(customer_id=customer.pk, metric="ai_interaction", amount=amount).allowed
            assert remaining() == expected, amount
        assert_invariants([customer.pk])

    def test_cron_rolls_a_processor_customer_into_the_processors_period(self):
        """A Stripe customer whose renewal invoice has not arrived yet: cron opens the period the
        subscription (from its last webhook) holds (two weeks here), not a month."""
        plans = plans_ensure()
        now = _db_now()
        customer = CustomerFactory(
            current_period_start=now - timedelta(days=30, hours=5),
            current_period_end=now - timedelta(hours=5),
        )
        Subscription.objects.create(
            customer=customer,
            plan=plans["growth"],
            processor="stripe",
            external_subscription_id="sub_cron",
            current_period_start=now - timedelta(hours=5),
            current_period_end=now + timedelta(days=14),
        )
        assert period_roll_due(actor="cron") == 1
        customer.refresh_from_db()
        assert (customer.current_period_start, customer.current_period_end) == (
            now - timedelta(hours=5),
            now + timedelta(days=14),
        )
        assert UsageTracking.objects.filter(customer=customer, period_start=now - timedelta(hours=5)).exists()

    def test_lazy_rollover_inside_consume(self):
        plans_ensure()
        now = _db_now()  # this test's transaction began before timezone.now()
        customer = CustomerFactory(
            current_period_start=now - timedelta(days=62), current_period_end=now - timedelta(days=31)
        )
        ProjectFactory(customer=customer)
        result = consume(customer_id=customer.pk, metric="minutes", amount=1)
        assert result.allowed and result.new_usage == 1
        customer.refresh_from_db()
        assert customer.current_period_start <= now < customer.current_period_end
        row = UsageTracking.objects.get(customer=customer, period_start=customer.current_period_start)
        assert (row.active_projects_count, row.minutes_used) == (1, 1)
        assert (
            AuditLog.objects.filter(
                customer_id=customer.pk, action="period_rollover", actor="consume (lazy rollover)"
            ).count()
            == 1
        )
        assert_invariants([customer.pk])


@pytest.mark.django_db
class TestCredits:
    def test_remaining_is_the_triggers_and_the_database_refuses_direct_writes(self):
        plans_ensure()
        customer = CustomerFactory()
        grant = CreditGrant.objects.create(
            customer=customer, metric="minutes", granted=10, remaining=999, source="purchase", created_by="t"
        )
        grant.refresh_from_db()
        assert grant.remaining == 10  # starts full whatever the client sent
        refused = (
            "credit_grants.remaining is kept by triggers from credit_draws and cannot be written directly"
        )
        for statement in (
            "UPDATE credit_grants SET remaining = 5 WHERE id = %s",
            "UPDATE credit_grants SET granted = 50 WHERE id = %s",
        ):
            with raises_sqlstate(IntegrityError, "23514", match=refused), connection.cursor() as cursor:
                cursor.execute(statement, [grant.pk])
        grant.refresh_from_db()
        assert (grant.granted, grant.remaining) == (10, 10)

    @pytest.mark.parametrize(
        "kwargs, error",
        [
            (
                dict(metric="minutes", quantity=-5, source="goodwill", reason="x"),
                BAD_QUANTITY.format(quantity=-5),
            ),
            (
                dict(metric="minutes", quantity=0, source="goodwill", reason="x"),
                BAD_QUANTITY.format(quantity=0),
            ),
            (
                dict(metric="minutes", quantity="ten", source="goodwill", reason="x"),
                BAD_QUANTITY.format(quantity="ten"),
            ),
            (
                dict(metric="minutes", quantity="1.0005", source="purchase"),
                BAD_QUANTITY.format(quantity="1.0005"),
            ),
            (
                dict(metric="minutes", quantity=10**15, source="purchase"),
                TOO_MUCH_CREDIT.format(quantity=10**15, maximum=CREDIT_MAX),
            ),
            (
                dict(metric="minutes", quantity="999999999999999.999", source="goodwill", reason="x"),
                TOO_MUCH_CREDIT.format(quantity="999999999999999.999", maximum=CREDIT_MAX),
            ),
            (
                dict(metric="minutes", quantity="1e30", source="goodwill", reason="x"),
                TOO_MUCH_CREDIT.format(quantity="1e30", maximum=CREDIT_MAX),
            ),
            (
                dict(metric="minutes", quantity="1E+5000", source="goodwill", reason="x"),
                TOO_MUCH_CREDIT.format(quantity="1E+5000", maximum=CREDIT_MAX),
            ),
            (
                dict(metric="ai_interaction", quantity="2.5", source="goodwill", reason="x"),
                WHOLE_NUMBERS.format(label="AI interactions", quantity="2.5"),
            ),
            (dict(metric="minutes", quantity=5, source="goodwill", reason="  "), GOODWILL_NEEDS_REASON),
            (
                dict(metric="gpu", quantity=5, source="goodwill", reason="x"),
                BAD_METRIC.format(metric="gpu", metrics="ai_interaction, minutes"),
            ),
            (dict(metric="minutes", quantity=5, source="gift", reason="x"), "unknown credit source 'gift'"),
        ],
    )
    def test_bad_grants_raise_and_write_nothing(self, kwargs, error):
        customer = CustomerFactory()
        with pytest.raises(CreditGrantError) as raised:
            credit_grant(customer=customer, actor="t", **kwargs)
        assert str(raised.value) == error
        assert not CreditGrant.objects.exists() and not AuditLog.objects.exists()

    def test_a_ledger_statement_over_several_grants_moves_each(self):
        """One statement drawing from (and then giving back to) several grants: the set-based path."""
        customer = CustomerFactory()
        grants = [
            credit_grant(customer=customer, metric="minutes", quantity=10, source="purchase", actor="t").pk
            for _ in range(3)
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO credit_draws (grant_id, customer_id, quantity, drawn_at) "
                "SELECT g, %s, q, now() FROM unnest(%s::uuid[], ARRAY[1, 2, 3]) AS d(g, q)",
                [customer.pk, grants],
            )
        assert [CreditGrant.objects.get(pk=g).remaining for g in grants] == [9, 8, 7]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE credit_draws SET quantity = quantity * 2 WHERE customer_id = %s", [customer.pk]
            )
        assert [CreditGrant.objects.get(pk=g).remaining for g in grants] == [8, 6, 4]
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM credit_draws WHERE grant_id = ANY(%s::uuid[])", [grants[:2]])
        assert [CreditGrant.objects.get(pk=g).remaining for g in grants] == [10, 10, 4]
        assert_invariants([customer.pk])

    def test_grant_is_audited(self):
        customer = CustomerFactory()
        credit_grant(
            customer=customer,
            metric="minutes",
            quantity=15,
            source="goodwill",
            actor="sam",
            reason="outage on 3 Nov",
        )
        row = AuditLog.objects.get(action="credit_grant")
        assert (row.actor, row.reason, row.after["granted"], row.customer_id) == (
            "sam",
            "outage on 3 Nov",
            "15",
            customer.pk,
        )

    def test_credit_remaining_drift_is_reported_and_reconciled(self):
        from django.db import transaction

        from billing.ops.integrity import usage_reconcile
        from tests.conftest import report_rows
        from usage.services.counters import counter_writes_allowed

        plans = plans_ensure()
        Plan.objects.filter(pk=plans["free"].pk).update(minutes_per_period=0)
        customer = CustomerFactory()
        grant = credit_grant(customer=customer, metric="minutes", quantity=10, source="purchase", actor="t")
        consume(customer_id=customer.pk, metric="minutes", amount=4)
        with transaction.atomic(), counter_writes_allowed():
            CreditGrant.objects.filter(pk=grant.pk).update(remaining=10)  # history: a lost draw
        rows = [r for r in report_rows([customer.pk]) if r["check"] == "credit_remaining"]
        assert rows == [
            {
                "check": "credit_remaining",
                "customer_id": str(customer.pk),
                "email": customer.email,
                "target_id": str(grant.pk),
                "tracked": 10,
                "actual": 6,
                "difference": -4,
            }
        ]
        usage_reconcile(customer_ids=[customer.pk], apply=True, started_by="test")
        grant.refresh_from_db()
        assert grant.remaining == 6
        assert_invariants([customer.pk])


@pytest.mark.django_db(transaction=True)  # the cascades are deferred to the commit
def test_a_customer_deleted_in_raw_sql_takes_its_credit_and_subscription():
    plans = plans_ensure()
    customer, other = CustomerFactory(), CustomerFactory()
    for c in (customer, other):
        _subscribe(c, plans["starter"])
        grant = credit_grant(customer=c, metric="minutes", quantity=10, source="purchase", actor="t")
        CreditDraw.objects.create(grant=grant, customer=c, quantity=4)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM customers WHERE id = %s", [customer.pk])
    assert list(Subscription.objects.values_list("customer_id", flat=True)) == [other.pk]
    assert list(CreditGrant.objects.values_list("customer_id", "remaining")) == [(other.pk, 6)]
    assert list(CreditDraw.objects.values_list("customer_id", flat=True)) == [other.pk]
    assert_invariants()


@pytest.mark.django_db
class TestProjectsS8:
    def test_s8_at_the_limit_refused_archiving_frees_the_quota_at_once(self):
        plans = plans_ensure()
        customer = CustomerFactory()
        _subscribe(customer, plans["starter"])  # 3 projects
        made = [project_create(customer=customer, name=f"p{i}") for i in range(3)]
        with pytest.raises(ProjectLimitReached) as refused:
            project_create(customer=customer, name="p4")
        assert str(refused.value) == (
            "Cannot create a project: 3 of 3 active projects on Starter. "
            "Archive or delete a project, or upgrade to Growth (10)."
        )
        assert Project.objects.filter(customer=customer).count() == 3
        made[0].status = Project.Status.ARCHIVED
        made[0].save()
        project_create(customer=customer, name="p4")
        made[1].delete()
        project_create(customer=customer, name="p5")
        with pytest.raises(ProjectLimitReached):
            project_create(customer=customer, name="p6")
        assert_invariants([customer.pk])

    def test_blank_name_refused(self):
        plans_ensure()
        with pytest.raises(ValueError, match="needs a name"):
            project_create(customer=CustomerFactory(), name="  ")
        assert not Project.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_s8_two_creations_at_the_limit_at_once_only_one_passes():
    """Two support agents create a customer's third Starter project at the same moment: the second
    waits for the first's locked check-and-insert, then is refused; the limit is never overshot."""
    plans = plans_ensure()
    customer = CustomerFactory()
    _subscribe(customer, plans["starter"])  # 3 active projects
    ProjectFactory.create_batch(2, customer=customer)
    first_created, first_may_commit = threading.Event(), threading.Event()
    first_pid, outcomes = [], {}

    def first():
        try:
            with transaction.atomic():
                first_pid.append(connection.cursor().connection.info.backend_pid)
                project_create(customer=customer, name="first")
                first_created.set()
                assert first_may_commit.wait(30)
            outcomes["first"] = "created"
        except Exception as exc:  # reported below
            outcomes["first"] = repr(exc)
        finally:
            first_created.set()
            connection.close()

    def second():
        try:
            project_create(customer=customer, name="second")
            outcomes["second"] = "created"
        except ProjectLimitReached as exc:
            outcomes["second"] = str(exc)
        except Exception as exc:  # reported below
            outcomes["second"] = repr(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_created.wait(30)
    threads[1].start()
    blocked_by(first_pid[0], unless=threads[1])  # the second creation waits for the first's lock
    first_may_commit.set()
    for t in threads:
        t.join(60)
    assert outcomes == {
        "first": "created",
        "second": "Cannot create a project: 3 of 3 active projects on Starter. "
        "Archive or delete a project, or upgrade to Growth (10).",
    }
    assert Project.objects.filter(customer=customer, status="active").count() == 3
    assert_invariants([customer.pk])


def _threads(n, target):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def run(i):
        try:
            with raw_connect(autocommit=True) as conn:
                barrier.wait(timeout=30)
                results[i] = target(conn, i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def test_s4_twenty_concurrent_consumes_at_4_of_5_exactly_one_allowed(self):
        plans = plans_ensure()
        Plan.objects.filter(pk=plans["free"].pk).update(ai_interactions_per_period=5)
        customer = CustomerFactory()
        consume(customer_id=customer.pk, metric="ai_interaction", amount=4)

        def one(conn, i):
            return conn.execute(
                "SELECT allowed FROM billing_consume(%s, 'ai_interaction', 1, %s)", [customer.pk, f"s4-{i}"]
            ).fetchone()[0]

        results = _threads(20, one)
        assert results.count(True) == 1 and results.count(False) == 19
        row = UsageTracking.objects.get(customer=customer)
        assert row.ai_interactions_count == 5
        assert ConsumeRequest.objects.filter(customer=customer).count() == 20
        assert_invariants([customer.pk])

    def test_credits_never_overdrawn_under_concurrency(self):
        plans = plans_ensure()
        Plan.objects.filter(pk=plans["free"].pk).update(minutes_per_period=10)
        customer = CustomerFactory()
        credit_grant(customer=customer, metric="minutes", quantity=7, source="purchase", actor="t")

        def one(conn, i):
            return conn.execute(
                "SELECT allowed FROM billing_consume(%s, 'minutes', 3, NULL)", [customer.pk]
            ).fetchone()[0]

        results = _threads(16, one)
        assert results.count(True) == 5  # 17 minutes of allowance + credit, 3 at a time
        grant = CreditGrant.objects.get(customer=customer)
        assert grant.remaining == 2
        assert_invariants([customer.pk])

    def test_same_idempotency_key_in_parallel_consumes_once(self):
        plans_ensure()
        customer = CustomerFactory()

        def one(conn, i):
            return conn.execute(
                "SELECT allowed, new_usage FROM billing_consume(%s, 'minutes', 2, 'once')", [customer.pk]
            ).fetchone()

        results = _threads(8, one)
        assert set(results) == {(True, Decimal("2"))}
        assert UsageEvent.objects.filter(customer=customer).count() == 1

    def test_rollover_race_cron_webhook_and_consume_open_one_period(self):
        plans_ensure()
        now = timezone.now()
        customer = CustomerFactory(
            current_period_start=now - timedelta(days=40), current_period_end=now - timedelta(days=9)
        )
        ProjectFactory(customer=customer)
        UsageEventFactory(
            customer=customer, metric="minutes", quantity=5, occurred_at=now - timedelta(days=20)
        )

        def one(conn, i):
            if i % 3 == 0:
                return conn.execute(
                    "SELECT billing_period_roll(%s, now(), 'cron')", [customer.pk]
                ).fetchone()[0]
            if i % 3 == 1:
                return conn.execute(
                    "SELECT allowed FROM billing_consume(%s, 'minutes', 1, NULL)", [customer.pk]
                ).fetchone()[0]
            return conn.execute("SELECT count(*) FROM billing_period_lock(%s)", [customer.pk]).fetchone()[0]

        _threads(12, one)
        assert AuditLog.objects.filter(customer_id=customer.pk, action="period_rollover").count() == 1
        customer.refresh_from_db()
        current = UsageTracking.objects.get(customer=customer, period_start__lte=now, period_end__gt=now)
        assert current.period_start == customer.current_period_start
        assert (current.active_projects_count, current.minutes_used) == (1, 4)
        assert_invariants([customer.pk])


@pytest.mark.django_db(transaction=True)
class TestRollCommand:
    def test_roll_usage_periods_command_is_idempotent_and_validates_now(self):
        plans_ensure()
        now = timezone.now()
        due = CustomerFactory(
            current_period_start=now - timedelta(days=35), current_period_end=now - timedelta(days=4)
        )
        CustomerFactory()  # current: untouched
        first = run_manage("roll_usage_periods")
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "opened 1 usage period"
        assert run_manage("roll_usage_periods").stdout.strip() == "opened 0 usage periods"
        due.refresh_from_db()
        assert due.current_period_end > now
        for bad in (["--now", "yesterday"], ["--now", "2026-11-01T00:00:00"], ["--batch-size", "0"]):
            result = run_manage("roll_usage_periods", *bad)
            assert result.returncode == 2 and "Traceback" not in result.stderr, (bad, result.stderr)
