"""Reads several billing callers share."""

from pathlib import Path

from django.db.models.expressions import RawSQL

from billing.models import Plan, Subscription
from usage.metrics import Metric
from usage.models import Customer
from usage.sql_functions import SqlFunction, sql_functions

SQL_DIR = Path(__file__).resolve().parent / "sql"  # billing's SQL functions, one current definition each


def sql_definitions() -> list[SqlFunction]:
    return sql_functions(SQL_DIR)


def _live_plan(column: str, customer: Customer) -> RawSQL:
    # The one definition of the live plan: billing/sql/billing_live_plan.sql.
    return RawSQL(f"SELECT {column} FROM billing_live_plan(%s)", [customer.pk])


def live_subscription(customer: Customer) -> Subscription | None:
    """The customer's newest subscription that is not canceled, with its plan; None on the Free default."""
    return (
        Subscription.objects.select_related("plan").filter(pk=_live_plan("subscription_id", customer)).first()
    )


def customer_plan(customer: Customer) -> Plan | None:
    """The live subscription's plan, else Free; None when there is neither."""
    return Plan.objects.filter(pk=_live_plan("plan_id", customer)).first()


def plan_allowance(plan: Plan, metric: Metric) -> int | None:
    """The plan's allowance per period of a metric of the catalogue (None = unlimited)."""
    return getattr(plan, metric.allowance)
