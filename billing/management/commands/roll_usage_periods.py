import argparse

from django.utils.dateparse import parse_datetime

from billing.management.base import OpsCommand, now_checked, positive_int, progress_bar
from billing.services.periods import period_roll_due
from billing.services.usage_months import usage_months_summarize
from usage.text import echo


def iso_instant(value):
    """An argparse type: an ISO-8601 instant with a time zone (exit 2 otherwise)."""
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 date and time, got {echo(value)}")
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{echo(value)} has no time zone; add Z or +00:00")
    return parsed


class Command(OpsCommand):
    help = (
        "Open the next usage period of every customer whose period has ended (idempotent: run it as often as "
        "you like; a customer's period opens once). Metered usage restarts, credits carry over. Then summarizes "
        "for finance each month that has closed (every period that started in it has ended)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--now",
            type=iso_instant,
            metavar="ISO-8601",
            help="Roll as if it were this instant (catch-up after an outage); default: now. More than a "
            "day from the database clock needs --force.",
        )
        parser.add_argument(
            "--force", action="store_true", help="Accept a --now far from the database clock."
        )
        parser.add_argument("--batch-size", type=positive_int(), default=500)

    def handle(self, *args, now, batch_size, force, **options):
        now = now_checked(now, force=force)
        with progress_bar(self.stderr, unit="customer", desc="rolling") as progress:
            rolled = period_roll_due(
                now=now, actor="manage.py roll_usage_periods", batch_size=batch_size, progress=progress
            )
        self.stdout.write(f"opened {rolled} usage period{'s' if rolled != 1 else ''}")
        # Then finance's summaries of the months that have closed (or changed since): the month page
        # and the trends read them (billing.services.usage_months).
        summarized = usage_months_summarize()
        built = len(summarized.built)
        self.stderr.write(  # stdout stays the one line cron scripts read
            f"summarized {built} closed month{'s' if built != 1 else ''}"
            + (f" ({', '.join(summarized.built)})" if built else "")
        )
