"""The audit log's writers (SPEC §5): one row per change, committed with the change.

Rows are appended through billing_audit_append() (billing/sql/), a SECURITY DEFINER function of the
schema's owner: the app role holds no INSERT on audit_log (SPEC §10, manage.py db_roles).
"""

import json
import uuid
from collections import defaultdict

from billing.models import AuditLog
from usage.metrics import BY_CODE as METRICS_BY_CODE
from usage.models import ReconciliationRun
from usage.numbers import value as value_for_people

# A person's reason (goodwill credit, an override) as the forms take it: a few sentences, not a file.
REASON_MAX = 500
REASON_TOO_LONG = "a reason is at most {max:,} characters (this one has {length:,}); say it in fewer words"


def reason_too_long(reason: str) -> str | None:
    """Why a person's reason is refused for its length, or None."""
    length = len(reason.strip())
    return REASON_TOO_LONG.format(max=REASON_MAX, length=length) if length > REASON_MAX else None


def _append(rows: list[dict]) -> list[AuditLog]:
    """Append audit rows in one call; the rows appended."""
    if not rows:
        return []
    for row in rows:
        row["target_id"] = str(row["target_id"])
        if row.get("customer_id") is not None:
            row["customer_id"] = str(row["customer_id"])
    return list(AuditLog.objects.raw("SELECT * FROM billing_audit_append(%s::jsonb)", [json.dumps(rows)]))


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
    """Append one audit row; the row."""
    (row,) = _append(
        [
            {
                "actor": actor,
                "action": str(action),
                "target_type": target_type,
                "target_id": target_id,
                "customer_id": customer_id,
                "before": before,
                "after": after,
                "reason": reason,
            }
        ]
    )
    return row


def audit_recount(*, run: ReconciliationRun, rows: list[dict]) -> None:
    """One audit row per customer whose counters a reconciliation (or a Recount click) set.

    Called by reconciliation inside the transaction of the fix (billing/ops/integrity.py).
    """
    per_customer: defaultdict[tuple[str, str], tuple[dict, dict]] = defaultdict(lambda: ({}, {}))
    for row in rows:
        key = row["check"] if row["target_id"] is None else f"{row['check']}:{row['target_id']}"
        before, after = per_customer[(row["customer_id"], row["email"])]
        before[key], after[key] = row["tracked"], row["actual"]
    _append(
        [
            {
                "actor": run.started_by,
                "action": str(AuditLog.Action.RECOUNT),
                "target_type": "customer",
                "target_id": customer_id,
                "customer_id": customer_id,
                "before": before,
                "after": after,
                "reason": f"counters set to the truth recomputed from their source rows (reconciliation run #{run.pk}, {email})",
            }
            for (customer_id, email), (before, after) in per_customer.items()
        ]
    )


def audit_changes(before: object, after: object, labels: dict | None = None) -> list[str]:
    """An audit row's before/after as "what: before → after" lines, never a dict or an internal row id.

    Keys are field names or "check:target-id" (a recount); the target id is an internal row and
    is dropped, the check named by ``labels``.
    """
    labels = labels or {}
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    lines = []

    def audit_value(item, key):
        # a metric by its label ("AI interactions"), not its code ("ai_interaction")
        metric = METRICS_BY_CODE.get(item) if key == "metric" and isinstance(item, str) else None
        return metric.label if metric else value_for_people(item)

    for key in dict.fromkeys([*before, *after]):
        name = labels.get(key.split(":", 1)[0], key.split(":", 1)[0].replace("_", " "))
        if key in before and key in after:
            if before[key] == after[key]:  # a webhook's effect records every field: list only changes
                continue
            lines.append(f"{name}: {audit_value(before[key], key)} → {audit_value(after[key], key)}")
        elif key in after:
            if after[key] not in (None, "", []):
                lines.append(f"{name}: {audit_value(after[key], key)}")
        else:
            lines.append(f"{name}: {audit_value(before[key], key)} → removed")
    return lines
