"""The sane horizon of a usage period (SPEC §10: "periods beyond a sane horizon are refused").

One definition for Python and SQL. Python reads the constants and :func:`period_outside_horizon` (a
webhook's times, cron's ``--now``, the report's months); SQL reads ``usage_period_check()``, a function
generated from here (like ``usage_metrics()``) that every period opened in the database goes through
(``usage_tracking_open``, SECURITY DEFINER and callable by the app role, so its bounds are outside
input too). A period ending in 9999 would hold a customer's counters there for good: the audit log is
append-only and the counters are guarded.
"""

from datetime import UTC, datetime, timedelta

# Nothing we bill for started before this; an end later than now + PERIOD_HORIZON is a typo or an attack.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
# The longest billing interval the processors offer is three years (Stripe); a few weeks of slack.
PERIOD_HORIZON = timedelta(days=3 * 366 + 31)

PERIOD_OUTSIDE_HORIZON = "UP001"  # the SQLSTATE usage_period_check() raises
PERIOD_OUTSIDE_HORIZON_MESSAGE = (
    "usage period [{start}, {end}) is outside the accepted range: it must start on or after {earliest} "
    "and end after it starts, by {latest} at the latest (now + {days} days)"
)


def latest(now: datetime) -> datetime:
    """The latest time a period may end (or a processor's time may name) at ``now``."""
    return now + PERIOD_HORIZON


def period_outside_horizon(start: datetime, end: datetime, *, now: datetime) -> str | None:
    """Why [start, end) is refused at ``now`` (the message usage_period_check() raises), or None."""
    if EARLIEST <= start < end <= latest(now):
        return None
    return PERIOD_OUTSIDE_HORIZON_MESSAGE.format(
        start=start.isoformat(),
        end=end.isoformat(),
        earliest=EARLIEST.isoformat(),
        latest=latest(now).isoformat(timespec="seconds"),
        days=PERIOD_HORIZON.days,
    )


def period_check_sql_function():
    """``usage_period_check(start, end)``: raises PERIOD_OUTSIDE_HORIZON unless the period is sane."""
    from usage.sql_functions import SqlFunction

    message = PERIOD_OUTSIDE_HORIZON_MESSAGE.format(
        start="%", end="%", earliest=EARLIEST.isoformat(), latest="%", days=PERIOD_HORIZON.days
    )
    body = f"""
BEGIN
    IF p_start IS NULL OR p_end IS NULL OR NOT (
        p_start >= '{EARLIEST.isoformat()}'::timestamptz AND p_start < p_end
        AND p_end <= now() + interval '{PERIOD_HORIZON.days} days'
    ) THEN
        RAISE EXCEPTION '{message}', p_start, p_end, date_trunc('second', now() + interval '{PERIOD_HORIZON.days} days')
            USING ERRCODE = '{PERIOD_OUTSIDE_HORIZON}';
    END IF;
END;
"""
    text = (
        "-- Generated from usage/horizon.py (the sane horizon of a usage period); edit it there.\n"
        "CREATE OR REPLACE FUNCTION usage_period_check(p_start timestamptz, p_end timestamptz)\n"
        "RETURNS void\n"
        f"LANGUAGE plpgsql STABLE AS $${body}$$;\n"
    )
    return SqlFunction("usage_period_check", text, body)
