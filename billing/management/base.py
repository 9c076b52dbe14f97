"""Base for the cron commands: exit codes of SPEC §8 and no traceback for expected failures."""

import argparse
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, InterfaceError, OperationalError, connection

from usage.horizon import EARLIEST, PERIOD_HORIZON, latest
from usage.text import bounded, echo, storable

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

# Output beyond this much waits in a temporary file rather than in memory.
_SPOOL_IN_MEMORY = 8 * 1024 * 1024

NOW_TOO_FAR = (
    "--now {now} is {days} from the database clock ({db_now}); a wrong --now moves customers' periods "
    "for good. Check it, and add --force if it is meant."
)
NOW_OUTSIDE_HORIZON = (
    "--now {now} is outside the accepted range of periods, even with --force: from {earliest} to "
    "{latest} (the database clock + {days} days)"
)


class OpsCommand(BaseCommand):
    """Exit 0 fine, 1 the check found a problem, 2 bad arguments or an unreachable database.

    stdout is all or nothing: the command writes into a spool that reaches stdout only when the
    command finished (or exited on purpose, sys.exit), so a failure midway never leaves half a JSON
    or CSV document for the next program in a pipe.
    """

    def create_parser(self, prog_name, subcommand, **kwargs):
        """argparse's own refusals ("invalid choice: ...", "unrecognized arguments: ...") quote the
        argument whole: a 5,000-character one came back whole. Bounded like every echo (usage/text.py)."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        refuse = parser.error
        parser.error = lambda message: refuse(bounded(message))  # type: ignore[method-assign]
        return parser

    def execute(self, *args, **options):
        target = options.get("stdout") or self.stdout
        with tempfile.SpooledTemporaryFile(
            max_size=_SPOOL_IN_MEMORY, mode="w+", encoding="utf-8", newline=""
        ) as spool:
            try:
                result = self._execute(*args, **{**options, "stdout": spool})
            except SystemExit:
                _copy(spool, target)
                raise
            _copy(spool, target)
            return result

    def _execute(self, *args, **options):
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


def _copy(spool, target):
    spool.seek(0)
    out = getattr(target, "_out", target)  # Django's OutputWrapper would add a newline per write
    shutil.copyfileobj(spool, out)
    out.flush()


def now_checked(now: datetime | None, *, force: bool) -> datetime | None:
    """A cron command's --now: more than a day from the database clock needs --force (exit 2)."""
    if now is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        db_now = cursor.fetchone()[0]
    off = abs(now - db_now)
    if off > timedelta(days=1) and not force:
        days = f"{off.days:,} days" if off.days else "more than a day"
        raise CommandError(
            NOW_TOO_FAR.format(now=now.isoformat(), days=days, db_now=db_now.isoformat(timespec="seconds")),
            returncode=EXIT_USAGE,
        )
    if not EARLIEST <= now <= latest(db_now):
        raise CommandError(
            NOW_OUTSIDE_HORIZON.format(
                now=now.isoformat(),
                earliest=EARLIEST.isoformat(),
                latest=latest(db_now).isoformat(timespec="seconds"),
                days=PERIOD_HORIZON.days,
            ),
            returncode=EXIT_USAGE,
        )
    return now


# Batch sizes and populations: more than this is a typo (--batch-size 10^30 was "bigint out of range").
INT_MAXIMUM = 1_000_000


def positive_int(minimum: int = 1, maximum: int = INT_MAXIMUM):
    """An argparse type: a whole number from ``minimum`` to ``maximum``, else a clear usage error (exit 2)."""

    def parse(value):
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {echo(value)}")
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        if n > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}")
        return n

    return parse


def text_label(max_length: int):
    """An argparse type: a label of at most ``max_length`` characters PostgreSQL can store (exit 2)."""

    def parse(value):
        if not storable(value):
            raise argparse.ArgumentTypeError(f"{echo(value)} holds a NUL or bytes that are not UTF-8")
        if len(value.strip()) > max_length:
            raise argparse.ArgumentTypeError(f"at most {max_length:,} characters, not {echo(value)}")
        return value.strip()

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
