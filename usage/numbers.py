"""The one number formatter: quantities as people and JSON read them (3, not Decimal('3.000'); 1.5)."""

from decimal import Decimal


def number_plain(value):
    """A Decimal as int when whole, else as float; anything else (int, float, None, text) unchanged."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
