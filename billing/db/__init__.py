import psycopg
from django.db import connections


def psycopg_connect(using: str = "default", **kwargs) -> psycopg.Connection:
    """A new psycopg connection to a configured database, outside Django's connection handling.

    For real concurrency (threads, other services) in tests and benchmarks; starts the embedded
    server first when that is the backend.
    """
    params = connections[using].get_connection_params()
    for django_only in ("cursor_factory", "context", "server_side_binding", "prepare_threshold"):
        params.pop(django_only, None)
    return psycopg.connect(**params, **kwargs)
