"""The credit drawn on finance's month page, read in the same pass as the month's sums (months_by_plan):
equal to usage_report --month's rows (REPORT_ROWS_SQL, which looks the draws up period by period) for
what could silently differ there: two periods of one customer in the month, several draws in one period
(the join must not count the period's own figures twice), a draw on the boundary between two periods,
a draw at a period's end, a draw in an earlier month's period, a refund's take-back."""

from datetime import timedelta
from decimal import Decimal

import pytest

from billing.finance.selectors import last_full_month, month_bounds, month_shift
from billing.models import CreditDraw, Plan
from billing.ops.usage_report import BY_PLAN_FIELDS, months_by_plan, usage_report
from billing.services.credits import credit_grant
from demo.data import plans_ensure
from tests.factories import CustomerFactory, subscribe
from usage.models import UsageTracking
from usage.services.counters import counter_writes_allowed

pytestmark = pytest.mark.django_db

MONTH = last_full_month()


def from_the_command(month: str) -> dict:
    """{plan: figures in BY_PLAN_FIELDS order} summed from the command's rows, one per period."""
    out: dict = {}
    for r in usage_report(month):
        f = out.setdefault(r["plan"], [r["plan"]] + [Decimal(0)] * 10)
        f[1] += 1
        f[2] += r["active_projects"]
        for base, (used, allowance, credit) in (
            (3, ("ai_interactions", "ai_allowance", "ai_from_credit")),
            (7, ("minutes", "minutes_allowance", "minutes_from_credit")),
        ):
            f[base] += r[used]
            f[base + 1] = None if f[base + 1] is None or r[allowance] is None else f[base + 1] + r[allowance]
            f[base + 2] += max(r[used] - r[allowance], 0) if r[allowance] is not None else 0
            f[base + 3] += r[credit]
    return out


def period(customer, start, end, *, ai=0, minutes=0):
    """A usage period with its counters; its plan is stamped as it opens (the customer's live plan)."""
    with counter_writes_allowed():
        return UsageTracking.objects.create(
            customer=customer,
            period_start=start,
            period_end=end,
            month=start.strftime("%Y-%m"),
            ai_interactions_count=ai,
            minutes_used=minutes,
        )


def customer_on(plan: Plan, email: str):
    customer = CustomerFactory(email=email)
    subscribe(customer, plan)
    return customer


def draw(grant, at, quantity, kind="usage"):
    CreditDraw.objects.create(grant=grant, customer=grant.customer, quantity=quantity, drawn_at=at, kind=kind)


def test_the_credit_drawn_in_the_months_pass_equals_the_commands_rows_period_by_period():
    plans = plans_ensure()
    start, end = month_bounds(MONTH)
    middle = start + timedelta(days=14)
    before, _ = month_bounds(month_shift(MONTH, -1))

    # Two periods in the month (a renewal mid-month), and one the month before.
    two = customer_on(plans["starter"], "two-periods@credit.test")
    period(two, before, start, ai=1, minutes=2)
    period(two, start, middle, ai=10, minutes=20)
    period(two, middle, end, ai=30, minutes=40)
    minutes = credit_grant(customer=two, metric="minutes", quantity=100, source="purchase", actor="test")
    ai = credit_grant(
        customer=two, metric="ai_interaction", quantity=100, source="goodwill", actor="test", reason="outage"
    )
    draw(minutes, before + timedelta(days=3), Decimal("1.5"))  # the month before: not this month's
    draw(minutes, start + timedelta(days=1), Decimal(3))  # first period: three draws
    draw(minutes, start + timedelta(days=2), Decimal(4))
    draw(ai, start + timedelta(days=2), Decimal(7))  # at the same instant as the one before
    draw(minutes, middle, Decimal(5))  # on the boundary: the second period's
    draw(minutes, middle + timedelta(days=3), Decimal("6.25"))
    draw(minutes, middle + timedelta(days=4), Decimal(8), kind="refund")  # a take-back: no usage
    draw(ai, end, Decimal(9))  # at the second period's end: the next period's (none here)

    # A customer with one draw, and one with no draw at all.
    loose = customer_on(plans["growth"], "one-draw@credit.test")
    period(loose, start, end, ai=5, minutes=6)
    draw(
        credit_grant(customer=loose, metric="minutes", quantity=10, source="purchase", actor="test"),
        middle,
        2,
    )
    none = customer_on(plans["growth"], "no-draw@credit.test")
    period(none, start + timedelta(days=3), end, ai=50, minutes=60)

    page = {figures[0]: figures for figures in months_by_plan([MONTH])[MONTH]}
    command = from_the_command(MONTH)
    assert page == command
    starter = dict(zip(BY_PLAN_FIELDS, page["starter"], strict=True))
    assert (starter["periods"], starter["ai_used"], starter["minutes_used"]) == (2, 40, 60)  # once each
    assert starter["minutes_from_credit"] == Decimal("18.25")  # 3 + 4 + 5 + 6.25
    assert starter["ai_from_credit"] == 7
    growth = dict(zip(BY_PLAN_FIELDS, page["growth"], strict=True))
    assert (growth["periods"], growth["minutes_used"], growth["minutes_from_credit"]) == (2, 66, 2)
    # One plan: the same figures.
    assert months_by_plan([MONTH], "starter")[MONTH] == [page["starter"]]
    # The month before: its own period and draw.
    earlier = {
        figures[0]: figures for figures in months_by_plan([month_shift(MONTH, -1)])[month_shift(MONTH, -1)]
    }
    assert earlier == from_the_command(month_shift(MONTH, -1))
    assert earlier["starter"][BY_PLAN_FIELDS.index("minutes_from_credit")] == Decimal("1.5")
