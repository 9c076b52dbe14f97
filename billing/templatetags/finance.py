"""Numbers for people on the finance pages (SPEC §7): thousands separators, no "0.000", money with its
currency, "unlimited" for a missing allowance.

TODO(h8's single formatter): delegate to it once it lands.
"""

from decimal import Decimal

from django import template
from django.conf import settings

register = template.Library()

CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


def quantity_text(value, unlimited: str = "unlimited") -> str:
    """1234567 -> "1,234,567"; 12.500 -> "12.5"; 0.000 -> "0"; None -> "unlimited"."""
    if value is None:
        return unlimited
    value = Decimal(value)
    if value == value.to_integral_value():
        return f"{int(value):,}"
    text = f"{value.normalize():,f}"
    return text


def money_text(minor_units, currency: str | None = None) -> str:
    """Integer minor units -> "$1,900.00" (or "1,900.00 CHF" for a currency without a symbol here)."""
    if minor_units is None:
        return "—"
    currency = currency or getattr(settings, "BILLING_CURRENCY", "USD")
    amount = f"{Decimal(minor_units) / 100:,.2f}"
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


@register.filter
def quantity(value, unlimited="unlimited"):
    return quantity_text(value, unlimited)


@register.filter
def money(value):
    return money_text(value)
