"""gunicorn's settings for production (`make serve`; README, Deployment).

gunicorn's own environment variables still apply: WEB_CONCURRENCY (workers), PORT or
GUNICORN_CMD_ARGS="--bind ..." (where to listen), FORWARDED_ALLOW_IPS (the proxies whose
X-Forwarded-Proto is trusted).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from billing.logs import logging_config  # noqa: E402

wsgi_app = "billing.wsgi:application"
# Settings load once in the master: a refused configuration (no SECRET_KEY, a bad DATABASE_URL) stops
# gunicorn with its one line, instead of workers failing to boot over and over.
preload_app = True
# gunicorn's own lines (start-up, worker errors, one per request) in the app's format.
logconfig_dict = logging_config()
# The control socket's default path is one per user, shared by every gunicorn on the machine (the
# tests start several); this one is managed with signals (TERM to stop, HUP to reload).
control_socket_disable = True
# Each worker serves several requests at once: gunicorn's gthread worker, one process with this many
# threads, each keeping its own database connection (DATABASE_CONN_MAX_AGE). Webhook deliveries served
# in parallel share WAL flushes and overlap PostgreSQL's CPU with Python's; gunicorn's default (one
# thread, the sync worker) served them one after another, which cannot reach SPEC §11's 500 a second
# on one process (bench/webhooks.py). GUNICORN_CMD_ARGS="--threads N" overrides it.
threads = 8
