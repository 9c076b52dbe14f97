"""SQL functions defined once and installed by every ``migrate`` (SPEC §13; CONTRIBUTING.md).

``<app>/sql/<name>.sql`` holds the current definition of one function (``CREATE OR REPLACE FUNCTION
<name>``); a few are generated from Python (``usage_metrics()`` from usage/metrics.py). After every
``migrate`` that leaves the database fully migrated, each app's post_migrate handler calls
:func:`sql_functions_install` with its definitions (``sql_definitions()`` of its selectors): a function whose body, or whose file,
differs from what the database holds is replaced; the others are left alone, so a second migrate
does nothing. Migrations never read these folders (they read their own frozen copies in
``migrations/sql/``), so a definition is edited in place and reaches every database, whatever
commit it was migrated at.

The file's fingerprint is stored as the function's comment: a change outside the body (volatility,
return type) is seen too.

A SECURITY DEFINER function's file pins ``SET search_path = public, pg_temp``; it is installed
pinned to the schema it is installed in (``current_schema()``), pg_temp last, so in a database whose
tables live elsewhere (an adopted product database) it never reads a same-named table in ``public``. A changed argument list is a new function to PostgreSQL: drop the old
signature in a migration.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.db import connections, transaction
from django.db.migrations.executor import MigrationExecutor

_DEFINITION_RE = re.compile(
    r"CREATE OR REPLACE FUNCTION\s+(?P<name>\w+)\s*\(.*?\bAS \$\$(?P<body>.*?)\$\$", re.S | re.I
)


PINNED_SEARCH_PATH = "SET search_path = public, pg_temp"


@dataclass(frozen=True)
class SqlFunction:
    name: str
    text: str  # the whole file: comment and CREATE OR REPLACE FUNCTION statement
    body: str  # between the $$ quotes, as pg_proc.prosrc holds it

    @property
    def fingerprint(self) -> str:
        return "billing-ops sql sha256:" + hashlib.sha256(self.text.encode()).hexdigest()

    def pinned_config(self, schema: str) -> list[str] | None:
        """pg_proc.proconfig once installed in ``schema`` (quoted as quote_ident() quotes it)."""
        return [f"search_path={schema}, pg_temp"] if PINNED_SEARCH_PATH in self.text else None

    def text_in(self, schema: str) -> str:
        """The statement that installs it in ``schema``: its search_path pinned there."""
        return self.text.replace(PINNED_SEARCH_PATH, f"SET search_path = {schema}, pg_temp")


def sql_functions(folder: Path) -> list[SqlFunction]:
    """The definitions in ``folder``, one per ``<name>.sql`` file, by name, rendered with the table and
    column names of the mapping (usage/names.py; the identity leaves the text as the file has it)."""
    from usage.names import render

    functions = []
    for path in sorted(folder.glob("*.sql")):
        text = render(path.read_text())
        matches = list(_DEFINITION_RE.finditer(text))
        if len(matches) != 1 or matches[0]["name"] != path.stem:
            raise ValueError(f"{path} must define exactly one function, named {path.stem}")
        functions.append(SqlFunction(path.stem, text, matches[0]["body"]))
    return functions


def fully_migrated(using: str = "default") -> bool:
    """No migration left to apply: the tables every definition refers to are there."""
    executor = MigrationExecutor(connections[using])
    return not executor.migration_plan(executor.loader.graph.leaf_nodes())


def sql_functions_install(functions: Iterable[SqlFunction], *, using: str = "default") -> list[str]:
    """Install every definition that differs from the database; the names installed."""
    installed = []
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute("SELECT quote_ident(current_schema())")
        (schema,) = cursor.fetchone()
        for function in functions:
            cursor.execute(
                "SELECT p.prosrc, obj_description(p.oid, 'pg_proc'), p.proconfig FROM pg_proc p "
                "WHERE p.proname = %s AND p.pronamespace = current_schema()::regnamespace",
                [function.name],
            )
            if (function.body, function.fingerprint, function.pinned_config(schema)) in cursor.fetchall():
                continue
            cursor.execute(function.text_in(schema))
            cursor.execute(
                "SELECT p.oid::regprocedure::text FROM pg_proc p "
                "WHERE p.proname = %s AND p.prosrc = %s AND p.pronamespace = current_schema()::regnamespace",
                [function.name, function.body],
            )
            (signature,) = cursor.fetchone()
            cursor.execute(f"COMMENT ON FUNCTION {signature} IS '{function.fingerprint}'")  # hex: no quoting
            installed.append(function.name)
    return installed
