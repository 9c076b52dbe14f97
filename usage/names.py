"""Table and column names of the product's tables: one mapping (SPEC §2, issue 13 deliver 2).

billing-ops names the product's tables ``customers``, ``projects``, ``presets``, ``preset_usage``,
``usage_events`` and ``usage_tracking``. A product database that calls them otherwise (Supabase's
``users`` and ``user_id``, its own counter names) is adopted through a mapping from billing-ops'
names to the product's: the models' ``db_table``/``db_column`` come from it, and so does the text of
every SQL function (``usage/sql``, ``billing/sql``) and trigger body (``usage/triggers.py``) that
``migrate`` installs and ``check_triggers`` compares against. A greenfield install has no mapping:
the identity, under which every name and every SQL text is exactly what it was.

The mapping is the setting ``BILLING_OPS_NAMES``, or a JSON file named by the environment variable
``BILLING_OPS_NAMES_FILE`` (billing/settings.py reads it)::

    {"tables": {"customers": "users"},
     "columns": {"projects.customer_id": "user_id", "usage_tracking.minutes_used": "transcription_minutes"}}

Keys are billing-ops' names (``table`` and ``table.column``), values the product's. A column renamed
on one table must be renamed the same way on every product table that has it (SQL refers to
``customer_id`` without saying which table's): the mapping is refused otherwise.

:func:`render` applies the mapping to SQL text: it renames the product's table names, the columns
that a product table's alias qualifies, the column lists of INSERT, ON CONFLICT and UPDATE ... SET
on a product table, and a bare column name when no other table in the text has a column of that
name (billing-ops' own tables keep billing-ops' names). Comments and string literals are left as
they are, except a literal that is exactly a mapped counter column (the metric catalogue's
``counter``, used by dynamic SQL).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# billing-ops' product tables and their columns, by billing-ops' names (usage/models.py).
PRODUCT_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("id", "email", "name", "current_period_start", "current_period_end", "created_at"),
    "projects": ("id", "customer_id", "name", "status", "created_at", "updated_at"),
    "presets": ("id", "customer_id", "name", "usage_count", "last_used_at", "created_at"),
    "preset_usage": ("id", "preset_id", "customer_id", "used_at"),
    "usage_events": (
        "id",
        "customer_id",
        "metric",
        "quantity",
        "occurred_at",
        "idempotency_key",
        "reason",
        "created_at",
    ),
    "usage_tracking": (
        "id",
        "customer_id",
        "period_start",
        "period_end",
        "month",
        "active_projects_count",
        "ai_interactions_count",
        "minutes_used",
        "updated_at",
    ),
}

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class NameMapping:
    tables: dict[str, str] = field(default_factory=dict)  # billing-ops' table -> the product's
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> {column -> product's}

    @property
    def identity(self) -> bool:
        return not self.tables and not self.columns

    def table(self, name: str) -> str:
        return self.tables.get(name, name)

    def column(self, table: str, name: str) -> str:
        return self.columns.get(table, {}).get(name, name)

    def column_renames(self) -> dict[str, str]:
        """Column name -> the product's, for every renamed column (the same on every table)."""
        return {old: new for renamed in self.columns.values() for old, new in renamed.items()}

    def render(self, sql: str, *, other_columns: dict[str, set[str]] | None = None) -> str:
        return render(sql, self, other_columns=other_columns)


def mapping_parse(data: object, *, source: str = "BILLING_OPS_NAMES") -> NameMapping:
    """A mapping from its JSON form; ImproperlyConfigured with a clear message when it is wrong."""

    def refuse(message: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"{source}: {message}")

    if data in (None, {}):
        return NameMapping()
    if not isinstance(data, dict):
        raise refuse('must be an object {"tables": {...}, "columns": {...}}')
    unknown = set(data) - {"tables", "columns"}
    if unknown:
        raise refuse(f"unknown key(s) {', '.join(sorted(unknown))} (only 'tables' and 'columns')")
    tables_in, columns_in = data.get("tables") or {}, data.get("columns") or {}
    if not isinstance(tables_in, dict) or not isinstance(columns_in, dict):
        raise refuse("'tables' and 'columns' must be objects")
    tables: dict[str, str] = {}
    for old, new in tables_in.items():
        if old not in PRODUCT_COLUMNS:
            raise refuse(f"unknown table {old!r} (billing-ops' product tables: {', '.join(PRODUCT_COLUMNS)})")
        if not isinstance(new, str) or not _IDENTIFIER.match(new):
            raise refuse(f"table {old!r}: {new!r} is not a lower-case SQL name")
        if new != old:
            tables[old] = new
    columns: dict[str, dict[str, str]] = {}
    for key, new in columns_in.items():
        table, _, column = str(key).partition(".")
        if table not in PRODUCT_COLUMNS or column not in PRODUCT_COLUMNS[table]:
            raise refuse(f"unknown column {key!r} (write 'table.column' with billing-ops' names)")
        if column == "id":
            raise refuse(f"{key!r}: primary keys keep the name id")
        if not isinstance(new, str) or not _IDENTIFIER.match(new):
            raise refuse(f"column {key!r}: {new!r} is not a lower-case SQL name")
        if new != column:
            columns.setdefault(table, {})[column] = new
    for table, renamed in columns.items():
        seen = set(PRODUCT_COLUMNS[table]) - set(renamed)
        for new in renamed.values():
            if new in seen or list(renamed.values()).count(new) > 1:
                raise refuse(f"table {table!r} would have two columns named {new!r}")
    for column in {c for renamed in columns.values() for c in renamed}:
        targets = {
            t: columns.get(t, {}).get(column, column) for t, cols in PRODUCT_COLUMNS.items() if column in cols
        }
        if len(set(targets.values())) > 1:
            listed = ", ".join(f"{t}.{column} -> {n}" for t, n in sorted(targets.items()))
            raise refuse(f"column {column!r} must be renamed the same way on every product table ({listed})")
    new_tables = list(tables.values())
    for new in new_tables:
        if new_tables.count(new) > 1 or (new in PRODUCT_COLUMNS and new not in tables):
            raise refuse(f"two product tables would be named {new!r}")
    return NameMapping(tables, columns)


def mapping_load(setting: object, path: str) -> NameMapping:
    """The mapping of the settings: ``BILLING_OPS_NAMES`` or the file ``BILLING_OPS_NAMES_FILE``."""
    if setting and path:
        raise ImproperlyConfigured("set BILLING_OPS_NAMES or BILLING_OPS_NAMES_FILE, not both")
    if not path:
        return mapping_parse(setting)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ImproperlyConfigured(
            f"BILLING_OPS_NAMES_FILE {path}: cannot read it ({error.strerror})"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ImproperlyConfigured(f"BILLING_OPS_NAMES_FILE {path}: not JSON ({error})") from None
    return mapping_parse(data, source=f"BILLING_OPS_NAMES_FILE {path}")


@lru_cache(maxsize=1)
def mapping() -> NameMapping:
    """The configured mapping (read once per process)."""
    from django.conf import settings

    return mapping_load(
        getattr(settings, "BILLING_OPS_NAMES", None), getattr(settings, "BILLING_OPS_NAMES_FILE", "")
    )


def table(name: str) -> str:
    """The product's name of billing-ops' table ``name``."""
    return mapping().table(name)


def column(table_name: str, name: str) -> str:
    """The product's name of billing-ops' column ``table_name.name``."""
    return mapping().column(table_name, name)


def db_column(table_name: str, name: str) -> str | None:
    """A model field's ``db_column``: None unless the mapping renames it (the identity adds nothing, so
    the migrations' state of the models stays as it is)."""
    new = column(table_name, name)
    return new if new != name else None


# --- rendering SQL text ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<comment>--[^\n]*|/\*.*?\*/)
      |(?P<string>[Ee]?'(?:[^']|'')*')
      |(?P<quoted>"(?:[^"]|"")*")
      |(?P<dollar>\$[A-Za-z_]*\$)
      |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      |(?P<space>\s+)
      |(?P<other>.)""",
    re.S | re.X,
)
_CLAUSE_END = {
    "select",
    "values",
    "where",
    "from",
    "returning",
    "on",
    "default",
    "do",
    "join",
    "group",
    "order",
    "limit",
}
_TABLE_BEFORE = {"from", "join", "update", "into", "table", "only"}
_NOT_ALIAS = {
    "as",
    "on",
    "where",
    "set",
    "join",
    "left",
    "right",
    "inner",
    "cross",
    "full",
    "natural",
    "using",
    "group",
    "order",
    "limit",
    "for",
    "returning",
    "values",
    "select",
    "default",
    "lateral",
    "union",
    "window",
    "having",
    "offset",
}


def _other_tables_columns() -> dict[str, set[str]]:
    """Columns of billing-ops' own tables (every installed model that is not a product table)."""
    from django.apps import apps

    columns: dict[str, set[str]] = {}
    for model in apps.get_models():
        name = model._meta.db_table
        if name in PRODUCT_COLUMNS or name in mapping().tables.values():
            continue
        columns[name] = {f.column for f in model._meta.concrete_fields}
    return columns


def render(
    sql: str, names: NameMapping | None = None, *, other_columns: dict[str, set[str]] | None = None
) -> str:
    """``sql`` with billing-ops' product names replaced by the mapping's (the identity returns it as is)."""
    names = names or mapping()
    if names.identity:
        return sql
    if other_columns is None:
        other_columns = _other_tables_columns()
    renames = names.column_renames()
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(sql)]
    words = [(i, text.lower()) for i, (kind, text) in enumerate(tokens) if kind == "word"]
    position = {i: n for n, (i, _) in enumerate(words)}

    # Which tables the text names, and the aliases it gives them.
    aliases: dict[str, str] = {}  # alias (or table name) -> billing-ops' table
    named_other: set[str] = set()
    for n, (i, word) in enumerate(words):
        if n == 0 or words[n - 1][1] not in _TABLE_BEFORE:
            continue
        if word in PRODUCT_COLUMNS:
            aliases[word] = word
            following = words[n + 1 : n + 3]
            if following and following[0][1] == "as" and len(following) > 1:
                aliases[following[1][1]] = word
            elif following and following[0][1] not in _NOT_ALIAS and _adjacent(tokens, i, following[0][0]):
                aliases[following[0][1]] = word
        elif word in other_columns:
            named_other.add(word)
    ambiguous = {c for t in named_other for c in other_columns[t] if c in renames}

    out = [text for _, text in tokens]
    stmt_table: str | None = None  # the product table of the INSERT or UPDATE being read
    list_table: str | None = None  # inside "INSERT INTO t (...)" or "ON CONFLICT (...)": its table
    list_depth = set_depth = -1
    set_table: str | None = None  # inside "UPDATE t SET ...": its table
    depth = 0
    previous = ""  # the previous token that is not a space or a comment, lower case
    for i, (kind, text) in enumerate(tokens):
        if kind in ("space", "comment"):
            continue
        low = text.lower()
        last, previous = previous, low
        if kind == "other":
            if text == "(":
                depth += 1
                if stmt_table and (last == "conflict" or last in _insert_heads(stmt_table, aliases, names)):
                    list_table, list_depth = stmt_table, depth
            elif text == ")":
                if list_table and depth == list_depth:
                    list_table = None
                depth -= 1
                if set_table and depth < set_depth:
                    set_table = None
            elif text == ";":
                stmt_table = set_table = list_table = None
            continue
        if kind == "string":
            inner = text[1:-1]
            if inner in renames and _counter_literal(inner):
                out[i] = "'" + renames[inner] + "'"
            continue
        if kind != "word":
            continue
        n = position[i]
        before = words[n - 1][1] if n else ""
        if low in PRODUCT_COLUMNS and not _qualified(tokens, i):
            if before in ("into", "update"):
                stmt_table = low
            out[i] = names.table(low)
            continue
        if low == "set" and stmt_table and (before == "update" or set_table is None):
            set_table, set_depth = stmt_table, depth
            continue
        if set_table and depth == set_depth and low in ("from", "where", "returning"):
            set_table = None
        if low not in renames:
            continue
        qualifier = _qualifier(tokens, i)
        if qualifier is not None:
            table_of = aliases.get(qualifier.lower())
            if table_of is not None:
                out[i] = names.column(table_of, low)
            elif low not in ambiguous and qualifier.lower() not in other_columns:
                out[i] = renames[low]
            continue
        if _next_is_dot(tokens, i):
            continue
        if list_table is not None and depth == list_depth:
            out[i] = names.column(list_table, low)
        elif set_table is not None and depth == set_depth and _next_non_space(tokens, i) == "=":
            out[i] = names.column(set_table, low)
        elif low not in ambiguous:
            out[i] = renames[low]
    return "".join(out)


def _insert_heads(table_name: str, aliases: dict[str, str], names: NameMapping) -> set[str]:
    """What stands just before an INSERT's column list: the table's name (either) or its alias."""
    return {table_name, names.table(table_name)} | {a for a, t in aliases.items() if t == table_name}


def _counter_literal(value: str) -> bool:
    return value in ("active_projects_count", "ai_interactions_count", "minutes_used")


def _adjacent(tokens, i: int, j: int) -> bool:
    return all(kind == "space" for kind, _ in tokens[i + 1 : j])


def _qualified(tokens, i: int) -> bool:
    return i > 0 and tokens[i - 1][1] == "."


def _qualifier(tokens, i: int) -> str | None:
    if i >= 2 and tokens[i - 1][1] == "." and tokens[i - 2][0] == "word":
        return tokens[i - 2][1]
    return None


def _next_is_dot(tokens, i: int) -> bool:
    return i + 1 < len(tokens) and tokens[i + 1][1] == "."


def _next_non_space(tokens, i: int) -> str:
    for kind, text in tokens[i + 1 :]:
        if kind != "space":
            return text
    return ""
