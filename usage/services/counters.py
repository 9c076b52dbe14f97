"""The owner's way around the counter guard (SPEC §4, I5), for planting history in the demo and tests.

The guard opens only for a transaction marked in usage_counter_write_grants, a table only the
schema's owner can write (usage/sql/usage_counter_writes_granted.sql). Reconciliation does not use this: it
calls the SECURITY DEFINER recount functions, which compute what they write. The app role gets
"permission denied" here.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections


@contextmanager
def counter_writes_allowed(using: str = "default") -> Iterator[None]:
    """Let the current transaction write derived counters directly (the schema owner only)."""
    connection = connections[using]
    if not connection.in_atomic_block:
        raise RuntimeError("counter_writes_allowed() must run inside transaction.atomic()")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO usage_counter_write_grants VALUES (pg_current_xact_id()::text::bigint) ON CONFLICT DO NOTHING "
            "RETURNING true"
        )
        mine = cursor.fetchone() is not None
    yield
    # After an error the transaction rolls back, taking the mark with it.
    if mine:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM usage_counter_write_grants WHERE xact = pg_current_xact_id()::text::bigint"
            )
