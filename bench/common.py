"""Shared set-up for the benchmarks: Django on its own database, rebuilt for each run."""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The test suite's settings: production's (DEBUG off), with a throwaway key and plain HTTP.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("EMBEDDED_DBNAME", "billing_ops_bench")

import django  # noqa: E402

django.setup()


def log(message):
    print(message, file=sys.stderr, flush=True)


def sql(statement, params=None):
    """Run one statement on the benchmark database; its rows, if it returns any."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def timed(label, fn):
    """``(seconds, fn())``, with the label and the wall time on stderr."""
    log(f"{label} ...")
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    log(f"  {elapsed:.1f} s")
    return elapsed, result


def fresh_bench_schema():
    """Rebuild the benchmark database's schema, so the run measures the code as it is now."""
    from django.core.management import call_command
    from django.db import connection

    name = connection.settings_dict["NAME"]
    if "bench" not in name:
        sys.exit(
            f"refusing to rebuild database {name!r}: point DATABASE_URL at a database whose name contains 'bench'"
        )
    log(f"rebuilding database {name} ...")
    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    call_command("migrate", verbosity=0)
