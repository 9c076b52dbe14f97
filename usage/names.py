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

# billing-ops' product tables whose id is a bigint (the others' are uuids): a product's may be a uuid.
BIGINT_IDS = ("usage_tracking",)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class NameMapping:
    tables: dict[str, str] = field(default_factory=dict)  # billing-ops' table -> the product's
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> {column -> product's}
    uuid_ids: frozenset[str] = frozenset()  # tables whose id is a uuid where billing-ops' is a bigint

    @property
    def identity(self) -> bool:
        return not self.tables and not self.columns and not self.uuid_ids

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
    unknown = set(data) - {"tables", "columns", "uuid_ids"}
    if unknown:
        raise refuse(f"unknown key(s) {', '.join(sorted(unknown))} (only 'tables', 'columns' and 'uuid_ids')")
    uuid_ids = data.get("uuid_ids") or []
    if not isinstance(uuid_ids, list) or set(uuid_ids) - set(BIGINT_IDS):
        raise refuse(
            f"'uuid_ids' lists the tables whose id is a uuid in the product: only {', '.join(BIGINT_IDS)}"
        )
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
    return NameMapping(tables, columns, frozenset(uuid_ids))


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


def uuid_id(table_name: str) -> bool:
    """Whether the product's ``table_name`` has a uuid id where billing-ops' is a bigint."""
    return table_name in mapping().uuid_ids


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
      |(?P<param>%\(\w+\)s)
      |(?P<dollar>\$[A-Za-z_]*\$)
      |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      |(?P<space>\s+)
      |(?P<other>.)""",
    re.S | re.X,
)
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
    sql: str,
    names: NameMapping | None = None,
    *,
    other_columns: dict[str, set[str]] | None = None,
    extra_tables: dict[str, set[str]] | None = None,
) -> str:
    """``sql`` with billing-ops' product names replaced by the mapping's (the identity returns it as is).

    ``other_columns``: the columns of the tables that are not the product's (billing-ops' own models
    by default); ``extra_tables`` adds more (a temporary table of the caller's).
    """
    names = names or mapping()
    if names.identity:
        return sql
    other = dict(_other_tables_columns() if other_columns is None else other_columns)
    other.update(extra_tables or {})
    renames = names.column_renames()
    tokens = [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(sql)]
    code = [i for i, (kind, _) in enumerate(tokens) if kind not in ("space", "comment")]

    def low(i: int) -> str:
        return tokens[i][1].lower()

    # Pass 1: the tables the text names (FROM/JOIN/UPDATE/INTO x [[AS] alias]), and their aliases.
    refs: dict[int, tuple[str, str]] = {}  # token index of a table name -> (table, the word before)
    product_alias: dict[str, str] = {}
    other_alias: set[str] = set()
    read_other: set[str] = set()
    for n, i in enumerate(code):
        if tokens[i][0] != "word" or n == 0:
            continue
        k = n - 1
        if low(code[k]) == "." and k >= 2 and low(code[k - 1]) in _SCHEMAS:
            k -= 2  # schema.table
        before = low(code[k])
        if before not in _TABLE_BEFORE or (k == n - 1 and n >= 2 and low(code[n - 1]) == "."):
            continue
        name = low(i)
        if name not in PRODUCT_COLUMNS and name not in other:
            continue
        refs[i] = (name, before)
        alias = ""
        if n + 1 < len(code) and tokens[code[n + 1]][0] == "word":
            alias = low(code[n + 1])
            if alias == "as" and n + 2 < len(code):
                alias = low(code[n + 2])
            elif alias in _NOT_ALIAS:
                alias = ""
        for a in filter(None, (name, alias)):
            if name in PRODUCT_COLUMNS:
                product_alias[a] = name
            else:
                other_alias.add(a)
        if name in other and before != "into":
            read_other.add(name)
    ambiguous = {c for t in read_other for c in other[t] if c in renames}

    # Pass 2: rename.
    out = [text for _, text in tokens]
    stmt: tuple[str, str] | None = None  # ("product" | "other", table) of the INSERT or UPDATE being read
    stmt_words: set[str] = set()  # its table's name and alias: a "(" after one opens its column list
    list_of: tuple[str, str] | None = None
    list_depth = set_depth = -1
    set_of: tuple[str, str] | None = None
    depth = 0
    for n, i in enumerate(code):
        kind, text = tokens[i]
        word = text.lower()
        last = low(code[n - 1]) if n else ""
        if kind == "other":
            if text == "(":
                depth += 1
                if stmt and (last == "conflict" or (last in stmt_words and _head_of_insert(code, n, tokens))):
                    list_of, list_depth = stmt, depth
            elif text == ")":
                if list_of and depth == list_depth:
                    list_of = None
                depth -= 1
                if set_of and depth < set_depth:
                    set_of = None
            elif text == ";":
                stmt = set_of = list_of = None
            continue
        if kind == "string":
            inner = text[1:-1]
            if inner in renames and inner in _COUNTERS:
                out[i] = "'" + renames[inner] + "'"
            continue
        if kind != "word":
            continue
        if i in refs:
            table_name, before = refs[i]
            if before in ("into", "update"):
                stmt = ("product" if table_name in PRODUCT_COLUMNS else "other", table_name)
                alias = (
                    [a for a, t in product_alias.items() if t == table_name] if stmt[0] == "product" else []
                )
                stmt_words = {table_name, names.table(table_name), *alias}
                if stmt[0] == "other":
                    nxt = low(code[n + 1]) if n + 1 < len(code) else ""
                    stmt_words |= {nxt} if nxt not in _NOT_ALIAS else set()
                    if nxt == "as" and n + 2 < len(code):
                        stmt_words.add(low(code[n + 2]))
            if table_name in PRODUCT_COLUMNS:
                out[i] = names.table(table_name)
            continue
        if word in PRODUCT_COLUMNS and not (n and low(code[n - 1]) in (".", "as")):
            out[i] = names.table(word)  # a table name as a qualifier (usage_tracking.x) or elsewhere
            continue
        if word == "set" and stmt and (last == "update" or set_of is None):
            set_of, set_depth = stmt, depth
            continue
        if set_of and depth == set_depth and word in ("from", "where", "returning"):
            set_of = None
        if word not in renames:
            continue
        if n and low(code[n - 1]) == ".":  # qualified: alias.column
            qualifier = low(code[n - 2]) if n >= 2 else ""
            if qualifier in product_alias:
                out[i] = names.column(product_alias[qualifier], word)
            elif qualifier not in other_alias and qualifier not in other and word not in ambiguous:
                out[i] = renames[word]
            continue
        if n + 1 < len(code) and low(code[n + 1]) == ".":
            continue  # a qualifier itself
        if list_of is not None and depth == list_depth:
            if list_of[0] == "product":
                out[i] = names.column(list_of[1], word)
        elif set_of is not None and depth == set_depth and n + 1 < len(code) and low(code[n + 1]) == "=":
            if set_of[0] == "product":
                out[i] = names.column(set_of[1], word)
        elif word not in ambiguous:
            out[i] = renames[word]
    return "".join(out)


_SCHEMAS = {"public", "pg_temp"}
_COUNTERS = ("active_projects_count", "ai_interactions_count", "minutes_used")


def _head_of_insert(code: list[int], n: int, tokens) -> bool:
    """Whether the "(" at code[n] follows "INSERT INTO table [AS alias]" (a column list)."""
    back = [tokens[code[k]][1].lower() for k in range(max(0, n - 6), n)]
    return "into" in back
