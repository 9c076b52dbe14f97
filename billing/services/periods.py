"""Billing-period rollover (SPEC §3, §5): by cron, by a processor's renewal, lazily inside consume.

All three call billing_period_roll (billing/sql), which locks the customer row and opens the next
period once: cron and a webhook racing, or a redelivered renewal, open one period. Metered counters
restart, the active-projects gauge carries over, credit grants are untouched; each opening is audited.
"""

import uuid
from collections.abc import Callable
from datetime import datetime

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from usage.horizon import PERIOD_OUTSIDE_HORIZON
from usage.names import render

ROLL_BATCH = 500


def period_roll_due(
    *,
    now: datetime | None = None,
    actor: str,
    batch_size: int = ROLL_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Open the next period of every customer whose period has ended at ``now``; returns how many.

    Batches of customers in id order, each committed on its own, so a killed run keeps what it did
    and the next run carries on (customers already rolled no longer qualify).
    """
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(render("SELECT count(*) FROM customers WHERE current_period_end <= %s"), [now])
        due = cursor.fetchone()[0]
    rolled, after = 0, None
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                render(
                    "SELECT id FROM customers WHERE current_period_end <= %s AND (%s::uuid IS NULL OR id > %s::uuid) "
                    "ORDER BY id LIMIT %s"
                ),
                [now, after, after, batch_size],
            )
            ids = [r[0] for r in cursor.fetchall()]
            if not ids:
                return rolled
            cursor.execute(
                "SELECT count(*) FILTER (WHERE billing_period_roll(id, %s, %s)) FROM unnest(%s::uuid[]) AS id",
                [now, actor, ids],
            )
            rolled += cursor.fetchone()[0]
        after = ids[-1]
        if progress:
            progress(rolled, due)


class PeriodOutsideHorizon(ValueError):
    """The database refused the period (usage_period_check, SQLSTATE UP001); the message says why."""


def period_renew(*, customer_id: uuid.UUID | str, start: datetime, end: datetime, actor: str) -> bool:
    """A processor's renewal of [start, end): opens that period unless it is open already.

    PeriodOutsideHorizon when it ends beyond the horizon at the database's clock (a caller that
    checked at its own clock, a moment later, can still be refused by a second)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT billing_period_roll(%s, now(), %s, %s, %s)", [customer_id, actor, start, end]
            )
            return cursor.fetchone()[0]
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == PERIOD_OUTSIDE_HORIZON:
            raise PeriodOutsideHorizon(str(exc).strip().splitlines()[0]) from exc
        raise
