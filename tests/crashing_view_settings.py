"""Production's settings (and so its LOGGING) with one more URL, whose view fails unexpectedly.

For tests/test_production.py: what a 500 leaves in the log of a real server process.
"""

from billing.settings import *  # noqa: F403

ROOT_URLCONF = "tests.crashing_view_urls"
