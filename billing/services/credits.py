"""Overage credit (SPEC §3, §5): grants (their credit_remaining check is in billing/ops/checks.py, I4).

A grant is a ledger row: ``remaining`` starts at ``granted`` and only the triggers on credit_draws move
it (billing/triggers.py). Consume draws from it (billing_consume in billing/sql). Support grants
goodwill with a reason; a paid overage pack grants a purchase from its webhook. Both are audited.
"""

from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import transaction

from billing.models import AuditLog, CreditGrant
from billing.services.audit import audit_record
from usage.metrics import METERED
from usage.models import Customer

METRICS = {m.code: m.title for m in METERED}  # the catalogue's metered metrics (usage/metrics.py)
BAD_METRIC = "unknown metric {metric!r}; metrics are: {metrics}"
BAD_QUANTITY = "credit must be a positive number with at most 3 decimals, not {quantity!r}"
GOODWILL_NEEDS_REASON = "a goodwill grant needs a reason (it is audited)"


class CreditGrantError(ValueError):
    pass


def credit_quantity_parse(quantity: object) -> Decimal:
    try:
        value = Decimal(str(quantity).strip())
    except (InvalidOperation, ValueError):
        raise CreditGrantError(BAD_QUANTITY.format(quantity=quantity)) from None
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.001")) or value >= 10**15:
        raise CreditGrantError(BAD_QUANTITY.format(quantity=quantity))
    return value


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
    if metric not in METRICS:
        raise CreditGrantError(BAD_METRIC.format(metric=metric, metrics=", ".join(METRICS)))
    quantity = credit_quantity_parse(quantity)
    reason = (reason or "").strip()
    if source == CreditGrant.Source.GOODWILL and not reason:
        raise CreditGrantError(GOODWILL_NEEDS_REASON)
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
        grant.refresh_from_db(fields=["remaining"])
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
