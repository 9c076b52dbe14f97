"""Base for the cron commands: exit codes of SPEC §8 and no traceback for expected failures."""

import argparse
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, InterfaceError, OperationalError

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class OpsCommand(BaseCommand):
    """Exit 0 fine, 1 the check found a problem, 2 bad arguments or an unreachable database."""

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as exc:
            raise CommandError(
                f"database unreachable: {str(exc).strip().splitlines()[0]}", returncode=EXIT_USAGE
            )
        except subprocess.CalledProcessError as exc:  # the embedded server failed to start
            raise CommandError(f"embedded PostgreSQL failed to start: {exc}", returncode=EXIT_USAGE)
        except DatabaseError as exc:
            raise CommandError(f"database error: {str(exc).strip().splitlines()[0]}", returncode=EXIT_USAGE)


def positive_int(minimum: int = 1):
    """An argparse type: a whole number of at least ``minimum``, else a clear usage error (exit 2)."""

    def parse(value):
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}")
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return n

    return parse


def resolve_or_exit(resolve, value):
    """Call a resolver (a customer by email or id, a plan by code); its ValueError becomes exit 2."""
    try:
        return resolve(value)
    except ValueError as exc:
        raise CommandError(str(exc), returncode=EXIT_USAGE)


@contextmanager
def progress_bar(stderr, *, unit: str, desc: str) -> Iterator[Callable[[int, int], None] | None]:
    """The commands' one progress display: a bar on stderr when it is a terminal, nothing in cron.

    Yields ``update(done, total)`` for a service's ``progress`` argument, or None off a terminal.
    """
    stream = getattr(stderr, "_out", stderr)
    if not (hasattr(stream, "isatty") and stream.isatty()):
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=None, unit=unit, file=stream, desc=desc)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
