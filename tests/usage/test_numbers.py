"""The page formatter: thousands separators on fractions too (number_plain gives them as exact text)."""

from decimal import Decimal

import pytest

from usage.numbers import number, number_human


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            Decimal("1234.500"),
            "1,234.5",
        ),  # was "1234.5": number_plain's exact text passed through unformatted
        (Decimal("1234567.000"), "1,234,567"),
        (Decimal("0.000"), "0"),
        (1234567, "1,234,567"),
        (None, "unlimited"),
    ],
)
def test_finance_numbers_read_like_support_numbers(value, shown):
    assert number_human(value) == shown
    if value is not None:
        assert number(value) == shown
