"""Consumption against plan limits (SPEC §5): a thin caller of the SQL function billing_consume.

The whole check-and-consume is one locked step in the database (billing/sql/billing_consume.sql), so
another service can call it over SQL and get the same answer; this module gives Python callers a
typed result and turns the function's argument errors into ConsumeError.
"""

import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.db import DatabaseError, connection, transaction
from psycopg import errors

from billing.services.credits import METRICS, quantity_parse

BAD_AMOUNT = "amount must be a positive number with at most 3 decimals, not {quantity!r}"
AMOUNT_MAX = Decimal(10**15)  # billing_consume's bound (usage_events.quantity is numeric(18, 3))
TOO_LARGE = "amount {quantity} is too large (less than {maximum:,} per call)"


class ConsumeError(ValueError):
    """Bad arguments: unknown customer or metric, amount <= 0, a reused idempotency key."""


@dataclass(frozen=True)
class ConsumeResult:
    allowed: bool
    new_usage: Decimal
    effective_limit: Decimal | None
    plan: str
    subscription_status: str
    credits_remaining: Decimal
    message: str


def consume(
    *, customer_id: uuid.UUID | str, metric: str, amount: object, idempotency_key: str | None = None
) -> ConsumeResult:
    """Check and consume ``amount`` of ``metric`` for the customer, in its own transaction."""
    try:
        customer_id = uuid.UUID(str(customer_id))
    except ValueError:
        raise ConsumeError(f"no customer with id {customer_id!r} (not a UUID)") from None
    if metric not in METRICS:
        raise ConsumeError(f"unknown metric {metric!r}; metrics are: {', '.join(METRICS)}")
    try:
        amount = quantity_parse(amount, maximum=AMOUNT_MAX, too_large=TOO_LARGE, bad=BAD_AMOUNT)
    except ValueError as exc:
        raise ConsumeError(str(exc)) from None
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT * FROM billing_consume(%s::uuid, %s, %s, %s)",
                [str(customer_id), metric, amount, idempotency_key],
            )
            row = cursor.fetchone()
    except DatabaseError as exc:
        cause = exc.__cause__
        if isinstance(cause, (errors.InvalidParameterValue, errors.NoDataFound)):
            raise ConsumeError(cause.diag.message_primary) from None
        raise
    return ConsumeResult(*row)
