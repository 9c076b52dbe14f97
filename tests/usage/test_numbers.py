"""The one page formatter (SPEC §7, issue 8): every page, template filter and chart formats with
usage.numbers; CSV and JSON keep exact plain decimals (number_plain)."""

from decimal import Decimal

import pytest
from django.template import Context, Template

from usage import numbers
from usage.numbers import limit, money, number, number_plain


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        # was "1234.5": number_plain's exact text passed through unformatted
        (Decimal("1234.500"), "1,234.5"),
        (Decimal("1234567.000"), "1,234,567"),
        (Decimal("620.000"), "620"),  # a whole metric as a whole number
        (Decimal("0.000"), "0"),
        (1234567, "1,234,567"),
        (Decimal("-20.000"), "−20"),
        (None, "—"),
    ],
)
def test_numbers_for_people(value, shown):
    assert number(value) == shown


def test_limits_and_money_with_its_currency():
    assert limit(None) == "unlimited"
    assert limit(Decimal("600.000")) == "600"
    assert money(1990000) == "USD 19,900.00"
    assert money(1900, "eur") == "EUR 19.00"
    assert money(0) == "USD 0.00"
    assert money(None) == "—"


def test_csv_and_json_keep_exact_plain_decimals():
    assert number_plain(Decimal("1234.500")) == "1234.5"
    assert number_plain(Decimal("3.000")) == 3


def test_one_set_of_page_formatters():
    """Finance's second set (number_human, money_human: "$1,900.00") is gone; the filters wrap the one set."""
    assert not hasattr(numbers, "number_human") and not hasattr(numbers, "money_human")
    shown = Template("{% load human %}{{ n|number }} | {{ a|limit }} | {{ p|money }}").render(
        Context({"n": Decimal("1234.500"), "a": None, "p": 1900})
    )
    assert shown == "1,234.5 | unlimited | USD 19.00"


def test_audited_values_for_people():
    from usage.numbers import value

    assert value("2026-12-01T00:00:00+00:00") == "2026-12-01 00:00 UTC"  # was the ISO text
    assert value("2026-12-01T01:30:00+01:00") == "2026-12-01 00:30 UTC"
    assert value("growth") == "growth" and value("T" * 20) == "T" * 20
    assert value(Decimal("1000.000")) == "1,000"
