"""Numbers for people on the finance pages (SPEC §7): the one formatter's page forms
(usage.numbers.number_human, money_human) as template filters."""

from django import template
from django.conf import settings

from usage.numbers import money_human, number_human

register = template.Library()


def quantity_text(value, unlimited: str = "unlimited") -> str:
    return number_human(value, unlimited)


def money_text(minor_units, currency: str | None = None) -> str:
    return money_human(minor_units, currency or getattr(settings, "BILLING_CURRENCY", "USD"))


@register.filter
def quantity(value, unlimited="unlimited"):
    return number_human(value, unlimited)


@register.filter
def money(value):
    return money_text(value)
