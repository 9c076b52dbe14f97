"""Consumption against plan limits (SPEC §5): a thin caller of the SQL function billing_consume.

The whole check-and-consume is one locked step in the database (billing/sql/billing_consume.sql), so
another service can call it over SQL and get the same answer; this module gives Python callers a
typed result and turns the function's argument errors into ConsumeError.
"""

import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.db import DatabaseError, connection, transaction

from billing.services.credits import METRICS, QuantityTooLarge, QuantityTooPrecise, quantity_parse

BAD_AMOUNT = "amount must be a positive number, not {quantity!r}"
TOO_PRECISE = "amount {quantity} has more than 3 decimals"
AMOUNT_MAX = Decimal(10**15)  # billing_consume's bound (usage_events.quantity is numeric(18, 3))
TOO_LARGE = "amount {quantity} is too large (less than {maximum:,} per call)"
KEY_NOT_TEXT = "idempotency key must be text without NUL characters"


class ConsumeError(ValueError):
    """billing_consume refused its arguments and wrote nothing; ``sqlstate`` says which refusal.

    One subclass per refusal, each with the SQLSTATE billing_consume raises (README "Consume, from any
    service"); class UC is billing-ops' own.
    """

    sqlstate = ""


class UnknownCustomer(ConsumeError):
    sqlstate = "UC001"


class UnknownMetric(ConsumeError):
    sqlstate = "UC002"


class AmountNotPositive(ConsumeError):
    sqlstate = "UC003"


class AmountTooPrecise(ConsumeError):
    sqlstate = "UC004"


class AmountTooLarge(ConsumeError):
    sqlstate = "22003"  # numeric_value_out_of_range


class FractionOfWholeMetric(ConsumeError):
    sqlstate = "UC005"


class BadIdempotencyKey(ConsumeError):
    sqlstate = "UC006"


class IdempotencyKeyReused(ConsumeError):
    sqlstate = "UC007"


class IdempotencyKeyTaken(ConsumeError):
    sqlstate = "UC008"


class NoPlan(ConsumeError):
    sqlstate = "UC009"


CONSUME_ERRORS: dict[str, type[ConsumeError]] = {
    cls.sqlstate: cls
    for cls in (
        UnknownCustomer,
        UnknownMetric,
        AmountNotPositive,
        AmountTooPrecise,
        AmountTooLarge,
        FractionOfWholeMetric,
        BadIdempotencyKey,
        IdempotencyKeyReused,
        IdempotencyKeyTaken,
        NoPlan,
    )
}


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
        raise UnknownCustomer(f"no customer with id {customer_id!r} (not a UUID)") from None
    if metric not in METRICS:
        raise UnknownMetric(f"unknown metric {metric!r}; metrics are: {', '.join(METRICS)}")
    try:
        amount = quantity_parse(
            amount, maximum=AMOUNT_MAX, too_large=TOO_LARGE, bad=BAD_AMOUNT, too_precise=TOO_PRECISE
        )
    except QuantityTooLarge as exc:
        raise AmountTooLarge(str(exc)) from None
    except QuantityTooPrecise as exc:
        raise AmountTooPrecise(str(exc)) from None
    except ValueError as exc:
        raise AmountNotPositive(str(exc)) from None
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or "\x00" in idempotency_key):
        # PostgreSQL text cannot hold a NUL: the driver would refuse it with a bare DataError.
        raise BadIdempotencyKey(KEY_NOT_TEXT)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT * FROM billing_consume(%s::uuid, %s, %s, %s)",
                [str(customer_id), metric, amount, idempotency_key],
            )
            row = cursor.fetchone()
    except DatabaseError as exc:
        error = CONSUME_ERRORS.get(getattr(exc.__cause__, "sqlstate", None) or "")
        if error is not None:
            raise error(exc.__cause__.diag.message_primary) from None  # type: ignore[union-attr]
        raise
    return ConsumeResult(*row)
