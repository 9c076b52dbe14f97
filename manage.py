#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings")
    from django.core.management import execute_from_command_line
    from django.db import InterfaceError, OperationalError

    try:
        execute_from_command_line(sys.argv)
    except (OperationalError, InterfaceError) as exc:
        # Every command, Django's own too (migrate, createsuperuser...): a database that cannot be
        # reached is one line and exit 2, as the billing-ops commands say it (SPEC §8), not a traceback.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        sys.stderr.write(f"CommandError: database unreachable: {first}\n")
        sys.exit(2)
    except Exception:
        import logging

        # An unexpected error: its traceback in the one log format of every process (billing/logs.py).
        logging.getLogger("billing.commands").exception("manage.py %s failed", " ".join(sys.argv[1:2]))
        sys.exit(1)
