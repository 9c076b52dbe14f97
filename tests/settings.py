"""Settings of the test suite: production's (DEBUG off), with a key of its own and plain HTTP.

The test client and the live server speak plain HTTP, so the HTTPS-only settings are off, and static
files come from the apps through WhiteNoise's finders, with no collectstatic. Production's own
settings are tested in subprocesses (tests/test_production.py).
"""

import os

# Set before billing.settings reads them; manage.py subprocesses of the tests inherit them.
os.environ["DEBUG"] = "off"
os.environ.setdefault("SECRET_KEY", "tests-only-key-5f0c9a7e2b4d4c1e8a6f3b2d1c0e9f8a7b6c5d4e3f2a1b0c")

from billing.settings import *  # noqa: E402,F403

SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True  # look files up when asked: no scan of every app's files per test client

# The finance pages' read-replica alias (SPEC §12) on the same server: its test database mirrors the
# default one. FINANCE_DATABASE stays "default"; tests/billing/test_finance_replica.py points it here.
DATABASES.setdefault("replica", {**DATABASES["default"], "TEST": {"MIRROR": "default"}})  # noqa: F405
