"""Reads several billing callers share."""

from django.db.models import Q

from billing.models import Plan, Subscription

DEFAULT_PLAN_CODE = Plan.Code.FREE  # a customer with no live subscription is on Free


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
