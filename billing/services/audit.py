"""The audit log's writers (SPEC §5): one row per change, committed with the change."""

import uuid
from collections import defaultdict

from billing.models import AuditLog
from usage.models import ReconciliationRun


def audit_record(
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: object,
    customer_id: uuid.UUID | str | None = None,
    before: dict | None = None,
    after: dict | None = None,
    reason: str = "",
) -> AuditLog:
    return AuditLog.objects.create(
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        customer_id=customer_id,
        before=before,
        after=after,
        reason=reason,
    )


def audit_recount(*, run: ReconciliationRun, rows: list[dict]) -> None:
    """One audit row per customer whose counters a reconciliation (or a Recount click) set.

    Called by reconciliation inside the transaction of the fix (billing/ops/integrity.py).
    """
    per_customer: defaultdict[tuple[str, str], tuple[dict, dict]] = defaultdict(lambda: ({}, {}))
    for row in rows:
        key = row["check"] if row["target_id"] is None else f"{row['check']}:{row['target_id']}"
        before, after = per_customer[(row["customer_id"], row["email"])]
        before[key], after[key] = row["tracked"], row["actual"]
    AuditLog.objects.bulk_create(
        AuditLog(
            actor=run.started_by,
            action=AuditLog.Action.RECOUNT,
            target_type="customer",
            target_id=customer_id,
            customer_id=customer_id,
            before=before,
            after=after,
            reason=f"counters set to the truth recomputed from their source rows (reconciliation run #{run.pk}, {email})",
        )
        for (customer_id, email), (before, after) in per_customer.items()
    )
