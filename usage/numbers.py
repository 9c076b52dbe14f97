"""The one number formatter (SPEC §7, issue 8's "one number formatter").

Two forms, nothing else:
- for machines (JSON, CSV, run summaries): ``number_plain`` (3, not Decimal('3.000'); "0.125" exact);
- for people (every page, template filter, SVG chart, message and audit line): ``number`` (thousands
  separators, whole numbers without decimals, never "0.000"), ``limit`` (an allowance or "unlimited"),
  ``money`` (minor units with the currency's code: "USD 1,900.00"), ``percent`` and ``value``.

Support's and finance's pages both use these (finance had its own "$1,900.00" and "unlimited" forms
until they were merged); in usage, the lower layer, so both apps reach it. ``{% load human %}`` wraps
them as template filters.
"""

import re
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings


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


NONE = "—"
UNLIMITED = "unlimited"


def number(value, *, none: str = NONE) -> str:
    """1234 → "1,234"; Decimal("620.000") → "620"; Decimal("2.500") → "2.5"; -20 → "−20"."""
    if value is None or value == "":
        return none
    if isinstance(value, bool):
        return str(value)
    try:
        value = Decimal(str(value))
    except ArithmeticError:
        return str(value)
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value():
        text = f"{int(value):,}"
    else:
        text = f"{value.normalize():,f}"
    return text.replace("-", "−")


def count_of(n, noun: str, plural: str | None = None) -> str:
    """1 → "1 project", 1000 → "1,000 projects": messages say how many in words, never "project(s)"."""
    return f"{number(n)} {noun if n == 1 else plural or noun + 's'}"


# What people may type as a number (every quantity field, the grant's quantity, consume's amount as
# text): digits with at most one decimal point, a minus where negatives are allowed. Python's Decimal
# and Django's DecimalField also read "1e3" (as 1,000), "1E+5" and " NaN": a typo, not a quantity.
PLAIN_DECIMAL = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)$")
NOT_PLAIN = (
    "{value!r} is not a plain number: write it with digits and at most one decimal point, like 1000 or 12.5"
)


def plain_decimal(text) -> bool:
    return bool(PLAIN_DECIMAL.match(str(text).strip()))


def limit(value) -> str:
    """A plan's allowance: a number, or "unlimited" where the plan has none (NULL)."""
    return UNLIMITED if value is None else number(value)


def money(minor, currency: str | None = None) -> str:
    """Minor units (cents) with the currency: 1900 → "USD 19.00"; 0 → "USD 0.00"."""
    if minor is None:
        return NONE
    currency = (currency or settings.BILLING_CURRENCY).upper()
    amount = Decimal(int(minor)) / 100
    text = f"{amount:,.2f}".replace("-", "−")
    return f"{currency} {text}"


def percent(part, whole) -> str:
    if not whole:
        return NONE
    return f"{Decimal(part) / Decimal(whole) * 100:,.0f} %"


_CODE = re.compile(r"^[a-z]+(_[a-z]+)+$")


def value(item) -> str:
    """One audited value for people: numbers formatted, nothing as "none", lists joined."""
    if item is None:
        return "none"
    if isinstance(item, bool):
        return "yes" if item else "no"
    if isinstance(item, (int, float, Decimal)):
        return number(item)
    if isinstance(item, str):
        if _CODE.match(item):  # a stored code ("past_due") in words
            return item.replace("_", " ")
        try:
            return number(Decimal(item)) if item.strip() else '""'
        except ArithmeticError:
            return moment(item)
    if isinstance(item, (list, tuple)):
        return "; ".join(value(i) for i in item) if item else "none"
    if isinstance(item, dict):
        return ", ".join(f"{k}: {value(v)}" for k, v in item.items())
    return str(item)


def moment(text: str) -> str:
    """An ISO timestamp as the pages show times: "2026-12-01T00:00:00+00:00" → "2026-12-01 00:00 UTC";
    any other text unchanged."""
    if len(text) < 16 or text[10:11] != "T":
        return text
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    if at.tzinfo is None:
        return f"{at:%Y-%m-%d %H:%M}"
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
