"""Template filters over usage.numbers (the one number formatter): {% load human %} {{ value|number }}."""

from django import template

from usage import numbers
from usage.metrics import check_label, metric_label

register = template.Library()

register.filter("number", numbers.number)
register.filter("limit", numbers.limit)
register.filter("money", numbers.money)
register.filter("words", lambda value: str(value).replace("_", " "))
register.filter("metric", metric_label)  # a metric code as its label, written mid-sentence
register.filter("check", check_label)  # a drift check by its name for people
