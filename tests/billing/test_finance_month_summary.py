"""Finance's summaries of closed months (billing.services.usage_months): cron writes them after it rolls,
the month page and the trends read them, and they never show a figure the periods would not: a late
event or a reconciliation in a summarized month, or a plan's allowance edited, shows at once (the month
is computed from the periods until it is summarized again)."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pgtrigger
import pytest
from django.core.management import call_command
from django.db import connection

from billing.finance.selectors import usage_by_plan, usage_trend
from billing.models import Plan, UsageMonth
from billing.ops.integrity import usage_reconcile
from billing.ops.usage_report import usage_report
from billing.services.usage_months import summarized_months, usage_months_summarize
from demo.data import plans_ensure
from tests.factories import CustomerFactory, UsageEventFactory, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


def live(month):
    """The month's figures per plan summed from usage_report --month's rows (one per period)."""
    out = {}
    for r in usage_report(month):
        f = out.setdefault(r["plan"], [Decimal(0)] * 10)
        f[0] += 1
        f[1] += r["active_projects"]
        for base, (used, allowance, credit) in (
            (2, ("ai_interactions", "ai_allowance", "ai_from_credit")),
            (6, ("minutes", "minutes_allowance", "minutes_from_credit")),
        ):
            f[base] += r[used]
            f[base + 1] = None if f[base + 1] is None or r[allowance] is None else f[base + 1] + r[allowance]
            f[base + 2] += max(r[used] - r[allowance], 0) if r[allowance] is not None else 0
            f[base + 3] += r[credit]
    return out


def page(month):
    """The month page's figures per plan, in the same shape."""
    out = {}
    for row in usage_by_plan(month)[0]:
        figures = [row.periods, row.active_projects]
        for key in ("ai", "minutes"):
            m = row.metrics[key]
            figures += [m.used, m.allowance, m.overage, m.from_credit]
        out[row.plan] = [Decimal(v) if v is not None else None for v in figures]
    return out


def trend_ai(month):
    trend = usage_trend(month)
    column = trend["months"].index(month)
    return {code: values[column] for code, values in trend["series"]["ai"].items() if values[column]}


@pytest.fixture
def last_month():
    """Two customers with a period last month (ended: opened by late events) and one this month."""
    plans = plans_ensure()
    Plan.objects.filter(code="starter").update(ai_interactions_per_period=10)
    customers = []
    for n, plan in enumerate(("starter", "growth"), start=1):
        customer = CustomerFactory(email=f"summary{n}@month-summary.test")
        subscribe(customer, plans[plan])
        UsageEventFactory(
            customer=customer, quantity=6 * n, occurred_at=customer.current_period_start - timedelta(days=2)
        )
        UsageEventFactory(customer=customer, quantity=1)
        customers.append(customer)
    return (customers[0].current_period_start - timedelta(days=2)).strftime("%Y-%m"), customers


def test_rollover_summarizes_the_closed_months_and_the_pages_read_them(last_month):
    month, _ = last_month
    assert summarized_months([month]) == set()
    out, err = StringIO(), StringIO()
    call_command("roll_usage_periods", stdout=out, stderr=err)
    assert f"summarized 1 closed month ({month})" in err.getvalue()
    assert summarized_months([month]) == {month}
    assert UsageMonth.objects.filter(period_month=month).exists()
    assert page(month) == live(month)
    assert trend_ai(month) == {"starter": Decimal(6), "growth": Decimal(12)}
    # Read from the summary: what it holds is what the page shows.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_usage_month_plans SET ai_used = 99 WHERE plan = 'growth'")
    assert page(month)["growth"][2] == 99
    assert trend_ai(month)["growth"] == 99
    # This month is not closed: never summarized.
    this_month = last_month[1][0].current_period_start.strftime("%Y-%m")
    assert usage_months_summarize().built == []
    assert summarized_months([this_month]) == set()


def test_a_late_event_into_a_summarized_month_shows_at_once(last_month):
    month, (starter, _) = last_month
    usage_months_summarize()
    UsageEventFactory(
        customer=starter, quantity=5, occurred_at=starter.current_period_start - timedelta(days=1)
    )
    assert page(month) == live(month)
    assert page(month)["starter"][2:5] == [Decimal(11), Decimal(10), Decimal(1)]  # used, allowance, over
    assert trend_ai(month) == {"starter": Decimal(11), "growth": Decimal(12)}
    assert summarized_months([month]) == set()  # computed from the periods until summarized again
    assert usage_months_summarize().built == [month]
    assert page(month) == live(month) and summarized_months([month]) == {month}


def test_a_period_opened_in_a_summarized_month_shows_at_once(last_month):
    month, _ = last_month
    usage_months_summarize()
    newcomer = CustomerFactory(email="late@month-summary.test")
    UsageEventFactory(
        customer=newcomer, quantity=3, occurred_at=newcomer.current_period_start - timedelta(days=1)
    )
    assert page(month)["free"][2] == 3
    assert page(month) == live(month)


def test_a_reconciliation_of_a_summarized_month_shows_at_once_and_summarizes_it_again(last_month):
    month, (starter, _) = last_month
    usage_months_summarize()
    with pgtrigger.ignore("usage.UsageEvent:usage_events_on_insert"):  # drift: an event never counted
        UsageEventFactory(
            customer=starter, quantity=4, occurred_at=starter.current_period_start - timedelta(days=1)
        )
    assert page(month)["starter"][2] == 6  # the counters as they are
    usage_reconcile(customer_ids=[starter.pk], apply=True, started_by="test")
    assert page(month)["starter"][2] == 10  # set to the truth: shown at once
    assert summarized_months([month]) == {month}  # and summarized again as the run ended
    assert page(month) == live(month)


def test_an_allowance_edited_after_a_month_was_summarized_shows_with_the_plan_as_it_is(last_month):
    """Decided: a summary keeps no allowance of its own time. The page shows the allowance as
    usage_report --month does (the plan as it is now), so an edited plan makes every summarized month
    be computed from the periods until cron summarizes it again."""
    month, _ = last_month
    usage_months_summarize()
    assert page(month)["starter"][2:5] == [Decimal(6), Decimal(10), Decimal(0)]
    Plan.objects.filter(code="starter").update(ai_interactions_per_period=4)
    assert page(month)["starter"][2:5] == [Decimal(6), Decimal(4), Decimal(2)]
    assert page(month) == live(month)
    assert usage_months_summarize().built == [month]
    assert page(month)["starter"][2:5] == [Decimal(6), Decimal(4), Decimal(2)]


def test_a_plan_change_after_a_month_was_summarized_moves_nothing_in_it(last_month):
    from billing.services.plans import subscription_change_plan

    month, (starter, _) = last_month
    usage_months_summarize()
    before = page(month)
    subscription_change_plan(customer=starter, target=Plan.objects.get(code="pro"), actor="test")
    assert page(month) == before == live(month)


def test_a_reconciliation_that_changed_no_summarized_month_costs_one_small_query(
    last_month, django_assert_num_queries
):
    """Support's recount of one customer ends with this: it must not look for the open periods (a
    scan of every current period at 1M) when no summarized month was changed."""
    month, (starter, _) = last_month
    usage_months_summarize()
    with django_assert_num_queries(1):
        assert usage_months_summarize(rebuild_only=True).built == []
    UsageEventFactory(customer=starter, quantity=1)  # this month: not summarized, nothing noted
    with django_assert_num_queries(1):
        assert usage_months_summarize(rebuild_only=True).built == []
    assert summarized_months([month]) == {month}


def test_truncating_the_usage_periods_shows_at_once(last_month):
    """TRUNCATE fires no row trigger: the summary kept showing the periods it emptied (issue 12)."""
    month, _ = last_month
    usage_months_summarize()
    assert summarized_months([month]) == {month}
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_tracking CASCADE")
    assert summarized_months([month]) == set()
    assert page(month) == live(month) == {}
