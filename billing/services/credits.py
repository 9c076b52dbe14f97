"""Overage credit (SPEC §3, §5): grants (their credit_remaining check is in billing/ops/checks.py, I4).

A grant is a ledger row: ``remaining`` starts at ``granted`` and only the triggers on credit_draws move
it (billing/triggers.py). Consume draws from it (billing_consume in billing/sql). Support grants
goodwill with a reason; a paid overage pack grants a purchase from its webhook. Both are audited.
"""

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import transaction

from billing.models import AuditLog, CreditGrant
from billing.services.audit import audit_record, reason_too_long
from usage.metrics import BY_CODE, METERED
from usage.models import Customer
from usage.numbers import plain_decimal

METRICS = {m.code: m.title for m in METERED}  # the catalogue's metered metrics (usage/metrics.py)
BAD_METRIC = "unknown metric {metric!r}; metrics are: {metrics}"
BAD_QUANTITY = (
    "credit must be a positive number with at most 3 decimals, like 1000, 1,000 or 12.5 (digits, no "
    "exponent); not {quantity!r}"
)
CREDIT_MAX = Decimal(1_000_000)  # per grant: the largest overage pack is 10,000; beyond this is a typo
TOO_MUCH_CREDIT = "credit of {quantity} is more than one grant may hold (less than {maximum:,}); grant less"
WHOLE_NUMBERS = "{label} are whole numbers, not {quantity}"
GOODWILL_NEEDS_REASON = "a goodwill grant needs a reason (it is audited)"
# 1,000 and 1,000.5: commas only as thousands separators, in groups of three.
_THOUSANDS = re.compile(r"^\d{1,3}(,\d{3})+(\.\d+)?$")


class CreditGrantError(ValueError):
    pass


class QuantityTooLarge(ValueError):
    pass


class QuantityTooPrecise(ValueError):
    pass


def quantity_parse(
    value: object, *, maximum: Decimal, too_large: str, bad: str, too_precise: str | None = None
) -> Decimal:
    """A positive Decimal with at most 3 decimals and below ``maximum``, trailing zeros trimmed.

    Any other text (1e30, 1E+5000, NaN, 0.0001) raises a ValueError with ``bad``, never an arithmetic
    error (QuantityTooLarge with ``too_large``, QuantityTooPrecise with ``too_precise``, or ``bad``
    without it): this parses what people type and what callers send.
    """
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(bad.format(quantity=value)) from None
    if not number.is_finite() or number <= 0:
        raise ValueError(bad.format(quantity=value))
    if number >= maximum:
        raise QuantityTooLarge(too_large.format(quantity=value, maximum=maximum))
    if number != round(number, 3):  # finite and below maximum: rounding cannot overflow
        raise QuantityTooPrecise((too_precise or bad).format(quantity=value))
    number = round(number, 3)
    return number.to_integral_value() if number == number.to_integral_value() else number.normalize()


def credit_quantity_typed(text: str, metric: str | None = None) -> Decimal:
    """A grant's quantity as a person typed it (the admin's forms): digits, thousands commas and a
    decimal point only (usage.numbers.plain_decimal): Decimal reads "1e3" as 1,000, a typo here."""
    stripped = str(text).strip()
    if not (plain_decimal(stripped) or _THOUSANDS.match(stripped)):
        raise CreditGrantError(BAD_QUANTITY.format(quantity=stripped))
    return credit_quantity_parse(stripped, metric)


def credit_quantity_parse(quantity: object, metric: str | None = None) -> Decimal:
    """A grant's quantity: positive, at most 3 decimals, below CREDIT_MAX, whole for a whole metric."""
    typed = quantity
    if _THOUSANDS.match(str(quantity).strip()):  # "1,000" as people type it
        quantity = str(quantity).strip().replace(",", "")
    try:
        value = quantity_parse(quantity, maximum=CREDIT_MAX, too_large=TOO_MUCH_CREDIT, bad=BAD_QUANTITY)
    except ValueError as exc:
        # The message quotes what was typed ("1,000,001"), not the text with its commas taken out.
        raise CreditGrantError(str(exc).replace(f"{quantity}", f"{typed}".strip(), 1)) from None
    found = BY_CODE.get(metric or "")
    if found and found.whole and value != value.to_integral_value():
        raise CreditGrantError(WHOLE_NUMBERS.format(label=found.title, quantity=value))
    return value


def credit_grant_quantity(metric: str, quantity: object) -> Decimal:
    """A grant's metric checked and its quantity parsed (credit_quantity_parse); CreditGrantError if bad."""
    if metric not in METRICS:
        raise CreditGrantError(BAD_METRIC.format(metric=metric, metrics=", ".join(METRICS)))
    return credit_quantity_parse(quantity, metric)


def credit_grant(
    *,
    customer: Customer,
    metric: str,
    quantity: object,
    source: str,
    actor: str,
    reason: str = "",
    expires_at: datetime | None = None,
    external_ref: str | None = None,
) -> CreditGrant:
    """Grant credit, audited in the same transaction. Bad input raises CreditGrantError, writing nothing."""
    quantity = credit_grant_quantity(metric, quantity)
    reason = (reason or "").strip()
    if source == CreditGrant.Source.GOODWILL and not reason:
        raise CreditGrantError(GOODWILL_NEEDS_REASON)
    if source == CreditGrant.Source.GOODWILL and (too_long := reason_too_long(reason)):
        raise CreditGrantError(too_long)

    if source not in CreditGrant.Source.values:
        raise CreditGrantError(f"unknown credit source {source!r}")
    with transaction.atomic():
        grant = CreditGrant.objects.create(
            customer=customer,
            metric=metric,
            granted=quantity,
            source=source,
            expires_at=expires_at,
            created_by=actor,
            reason=reason,
            external_ref=external_ref,
        )
        grant.remaining = quantity  # as the insert trigger set it (nothing drawn yet): not read back
        audit_record(
            actor=actor,
            action=AuditLog.Action.CREDIT_GRANT,
            target_type="credit_grant",
            target_id=grant.pk,
            customer_id=customer.pk,
            before=None,
            after={
                "metric": metric,
                "granted": str(quantity),
                "source": source,
                "expires_at": expires_at.isoformat() if expires_at else None,
                "external_ref": external_ref,
            },
            reason=reason or f"{source} credit",
        )
    return grant
