#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except Exception:
        import logging

        # An unexpected error: its traceback in the one log format of every process (billing/logs.py).
        logging.getLogger("billing.commands").exception("manage.py %s failed", " ".join(sys.argv[1:2]))
        sys.exit(1)
