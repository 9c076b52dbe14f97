"""Template filters over usage.numbers (the one number formatter): {% load human %} {{ value|number }}."""

from django import template

from usage import numbers

register = template.Library()

register.filter("number", numbers.number)
register.filter("limit", numbers.limit)
register.filter("money", numbers.money)
register.filter("words", lambda value: str(value).replace("_", " "))
