"""The one number formatter: quantities as people and JSON read them (3, not Decimal('3.000'); 1.5).

``number_plain`` for JSON and plain text; ``number_human`` and ``money_human`` for pages (thousands
separators, money in its currency), built on it.
"""

from decimal import Decimal


def number_plain(value):
    """A Decimal as int when whole, else as exact decimal text ("0.125", never a float: JSON and run
    summaries keep every digit); anything else (int, float, None, text) unchanged."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        return format(value.normalize(), "f")
    return value


def number_human(value, unlimited: str = "unlimited") -> str:
    """1234567 -> "1,234,567"; Decimal("12.500") -> "12.5"; Decimal("0.000") -> "0"; None -> ``unlimited``."""
    if value is None:
        return unlimited
    plain = number_plain(Decimal(str(value)) if isinstance(value, float) else value)
    if isinstance(plain, int):
        return f"{plain:,}"
    if isinstance(plain, float):
        return f"{Decimal(str(plain)).normalize():,f}"
    return str(plain)


CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


def money_human(minor_units, currency: str) -> str:
    """Integer minor units -> "$1,900.00" (or "1,900.00 CHF" for a currency without a symbol here)."""
    if minor_units is None:
        return "—"
    amount = f"{Decimal(minor_units) / 100:,.2f}"
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"
