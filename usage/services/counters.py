"""The one sanctioned way around the counter guard (SPEC §4, I5)."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections


@contextmanager
def counter_writes_allowed(using: str = "default") -> Iterator[None]:
    """Let the current transaction write derived counters directly.

    Only reconciliation (counters set to the recomputed truth under lock) and the planting of
    historical drift in demo data and tests use this; the setting ends with the transaction.
    """
    connection = connections[using]
    if not connection.in_atomic_block:
        raise RuntimeError("counter_writes_allowed() must run inside transaction.atomic()")
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('billing_ops.recount', 'on', true)")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('billing_ops.recount', 'off', true)")
