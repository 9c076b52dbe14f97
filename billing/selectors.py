"""Reads several billing callers share."""

from pathlib import Path

from django.db.models import Q

from billing.models import Plan, Subscription

DEFAULT_PLAN_CODE = Plan.Code.FREE  # a customer with no live subscription is on Free
SQL_DIR = Path(__file__).resolve().parent / "sql"  # billing's SQL functions, one current definition each


def live_subscription(customer):
    return (
        Subscription.objects.select_related("plan")
        .filter(customer=customer)
        .filter(~Q(status=Subscription.Status.CANCELED))
        .first()
    )


def customer_plan(customer) -> Plan | None:
    subscription = live_subscription(customer)
    return subscription.plan if subscription else Plan.objects.filter(code=DEFAULT_PLAN_CODE).first()
