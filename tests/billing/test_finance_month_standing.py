"""Finance's month page says whether its figures are final (issue 12): read from the month's summary,
with when it was written, or added up from the periods as they are now, and then why (periods still
running, until when; a month not summarized yet; a change since its summary). The CSV and the command
are untouched by it."""

import re
from datetime import timedelta
from html import unescape

import pytest

from billing.services.usage_months import usage_months_summarize
from demo.data import plans_ensure
from tests.factories import CustomerFactory, UsageEventFactory, subscribe
from usage.models import UsageTracking

STANDING = re.compile(r'<p id="month-standing"[^>]*data-standing="([a-z]+)">(.*?)</p>', re.S)


@pytest.fixture
def months(db):
    """Two customers (Starter, Growth) with an ended period last month and a running one this month."""
    plans = plans_ensure()
    customers = []
    for n, plan in enumerate(("starter", "growth"), start=1):
        customer = CustomerFactory(email=f"standing{n}@month-standing.test")
        subscribe(customer, plans[plan])
        UsageEventFactory(
            customer=customer, quantity=3, occurred_at=customer.current_period_start - timedelta(days=2)
        )
        UsageEventFactory(customer=customer, quantity=1)
        customers.append(customer)
    first = customers[0]
    last = (first.current_period_start - timedelta(days=2)).strftime("%Y-%m")
    this = first.current_period_start.strftime("%Y-%m")
    return last, this, customers


@pytest.fixture
def finance(staff_client):
    return staff_client("fay", "Finance")


def standing(client, query: str) -> tuple[str, str]:
    response = client.get(f"/admin/finance/usage/?{query}")
    assert response.status_code == 200
    found = STANDING.search(response.content.decode())
    assert found, "the month page says nothing of whether its figures are final"
    kind, text = found.groups()
    return kind, " ".join(unescape(re.sub(r"<[^>]+>", "", text)).split())


def test_a_month_whose_periods_still_run_says_so_and_until_when(months, finance):
    _, this, customers = months
    ends = (
        UsageTracking.objects.filter(month=this).order_by("-period_end").values_list("period_end", flat=True)
    )
    last_end = ends[0]
    kind, text = standing(finance, f"month={this}")
    assert kind == "live"
    assert "Not final" in text
    assert "2 of these 2 usage periods are still running" in text
    assert f"the last ends {last_end:%-d %b %Y, %H:%M} UTC" in text
    # One plan: its own periods.
    kind, text = standing(finance, f"month={this}&plan=growth")
    assert kind == "live" and "1 of these 1 usage periods are still running" in text


def test_a_closed_month_is_not_final_until_summarized_then_final_with_when(months, finance):
    last, _, (starter, _) = months
    kind, text = standing(finance, f"month={last}")
    assert kind == "ended"
    assert "Every usage period that started in" in text and "has not been written yet" in text

    usage_months_summarize()
    kind, text = standing(finance, f"month={last}")
    assert kind == "final"
    assert text.startswith("Final.")
    assert re.search(r"written \d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d UTC", text)
    kind, _ = standing(finance, f"month={last}&plan=starter")
    assert kind == "final"

    # A late event corrects an ended period: the month is recomputed, and the page says so.
    UsageEventFactory(
        customer=starter, quantity=5, occurred_at=starter.current_period_start - timedelta(days=1)
    )
    kind, text = standing(finance, f"month={last}")
    assert kind == "recomputed"
    assert "changed one of its periods since" in text


def test_the_csv_and_a_month_with_no_period_say_nothing_of_it(months, finance):
    _, this, _ = months
    response = finance.get(f"/admin/finance/usage.csv?month={this}")
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    assert "final" not in body.lower() and body.startswith("Customer email,")
    empty = finance.get("/admin/finance/usage/?month=2001-01").content.decode()
    assert 'id="month-standing"' not in empty and "No usage period started in 2001-01" in empty
