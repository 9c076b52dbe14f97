"""``manage.py adopt --check``: what stands between a product database and billing-ops (SPEC §2).

Read-only (it runs in a READ ONLY transaction). Every item says what is wrong and how to fix it; an
item is either a blocker (the product, its owner or a superuser must act first), or something
``manage.py adopt`` adds itself (additive: a column with a default, a constraint, an extension, an
index), or a note. The database is ready when there is no blocker.
"""

import re
from dataclasses import asdict, dataclass

import pgtrigger
from django.apps import apps
from django.db import connections, models, transaction

from billing.adoption import PRODUCT_MODELS
from usage import metrics
from usage.models import Preset, PresetUsage, UsageEvent, UsageTracking
from usage.names import BIGINT_IDS
from usage.names import column as product_column
from usage.selectors import expected_sql_functions, row_constraint_present, row_constraints, sql_definitions

BLOCKER, ADDS, NOTE = "blocker", "adds", "note"
MIN_SERVER_VERSION = 140000  # SPEC §2: PostgreSQL >= 14
ADOPTION_TABLE = "billing_ops_adoption"  # what adoption added, for --uninstall

# Type families the counters accept for a column declared with the key's type.
_TYPE_FAMILIES = {
    "uuid": {"uuid"},
    "timestamp with time zone": {"timestamp with time zone"},
    "numeric": {"numeric"},
    "integer": {"integer", "bigint"},
    "bigint": {"bigint", "integer"},
    "varchar": {"character varying", "text"},
    "text": {"text", "character varying"},
}
_WRITES = r"(?:UPDATE|INSERT\s+INTO)\s+(?:ONLY\s+)?(?:\w+\.)?{table}\b"

# A product keyed by a month string ('YYYY-MM', UTC calendar months) gets the period bounds beside it,
# filled from it: {month} is the month column (qualified as the query needs).
PERIOD_FROM_MONTH = {
    "period_start": "(({month} || '-01')::timestamp AT TIME ZONE 'UTC')",
    "period_end": "((({month} || '-01')::timestamp + interval '1 month') AT TIME ZONE 'UTC')",
}
MONTH_FORMAT = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
OPENING_BALANCES = "opening balances"
OPENING_BALANCE_KEY = "opening-balance:"  # idempotency_key prefix of the opening-balance events


@dataclass(frozen=True)
class Item:
    kind: str  # BLOCKER, ADDS or NOTE
    subject: str  # the table, column, constraint, trigger... it is about
    problem: str
    fix: str
    trigger: str = ""  # a product trigger the item is about, and its table
    table: str = ""


@dataclass(frozen=True)
class Preflight:
    items: list[Item]
    server_version: str
    role: str

    @property
    def ready(self) -> bool:
        return not any(i.kind == BLOCKER for i in self.items)

    @property
    def adopted(self) -> bool:
        return any(i.subject == "adoption" for i in self.items)

    def as_dict(self) -> dict:
        return {
            "ready": self.ready,
            "server_version": self.server_version,
            "role": self.role,
            "blockers": sum(i.kind == BLOCKER for i in self.items),
            "adds": sum(i.kind == ADDS for i in self.items),
            "items": [asdict(i) for i in self.items],
        }


def base_type(sql_type: str) -> str:
    return sql_type.split("(")[0].strip()


def our_trigger_names() -> dict[str, str]:
    """pgid -> table of every trigger billing-ops declares."""
    return {trigger.get_pgid(model): model._meta.db_table for model, trigger in pgtrigger.registered()}


def usage_functions() -> dict[str, str]:
    """Name -> body of the counter functions adoption installs (usage's SQL, current definitions)."""
    return expected_sql_functions(sql_definitions())


def _tables(cursor) -> dict[str, dict]:
    cursor.execute(
        "SELECT c.relname, c.oid, pg_get_userbyid(c.relowner), pg_has_role(current_user, c.relowner, 'USAGE'), "
        "has_table_privilege(c.oid, 'SELECT') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
    )
    return {
        name: {"oid": oid, "owner": owner, "owned": owned, "readable": readable}
        for name, oid, owner, owned, readable in cursor.fetchall()
    }


def _columns(cursor, oid: int) -> dict[str, str]:
    cursor.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
        [oid],
    )
    return dict(cursor.fetchall())


def _collect_sql(connection, action, *, without_triggers=False) -> str:
    """The DDL Django's schema editor would run for ``action(editor)``, without running it
    (``without_triggers``: without the statements of django-pgtrigger's, which adopt installs last)."""
    with connection.schema_editor(collect_sql=True, atomic=False) as editor:
        action(editor)
    statements = [s for s in editor.collected_sql if not (without_triggers and "pgtrigger_" in s)]
    return "; ".join(s.rstrip(";") for s in statements) + ";"


def adoption_preflight(*, drop_product_counter_triggers: bool = False, using: str = "default") -> Preflight:
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
            "current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_schema(), "
            "has_schema_privilege(current_schema(), 'CREATE')"
        )
        version, version_num, role, superuser, schema, can_create = cursor.fetchone()
        items = _preflight_items(connection, cursor, version_num, role, superuser, schema, can_create)
        if not any(i.subject == "adoption" for i in items):
            items += _trigger_items(cursor, drop_product_counter_triggers)
            items += _counter_writing_function_items(cursor)
    return Preflight(items=items, server_version=version, role=role)


def _preflight_items(connection, cursor, version_num, role, superuser, schema, can_create) -> list[Item]:
    items: list[Item] = []
    if version_num < MIN_SERVER_VERSION:
        items.append(
            Item(BLOCKER, "server", f"PostgreSQL {version_num} is older than 14", "Upgrade to 14 or later.")
        )
    if not can_create:
        items.append(
            Item(
                BLOCKER,
                f"schema {schema}",
                f"role {role} cannot create objects in schema {schema}",
                f"GRANT CREATE ON SCHEMA {schema} TO {role}; (as the schema's owner)",
            )
        )
    tables = _tables(cursor)
    if ADOPTION_TABLE in tables:
        items.append(
            Item(
                NOTE,
                "adoption",
                "this database is already adopted",
                "manage.py adopt --uninstall removes it.",
            )
        )
        return items
    for model in PRODUCT_MODELS:
        items += _product_table_items(connection, cursor, model, tables, role, superuser)
    if UsageEvent._meta.db_table not in tables and UsageTracking._meta.db_table in tables:
        items += _opening_balance_items(cursor)
    items += _extension_items(cursor, superuser)
    items += _own_object_items(cursor, tables)
    return items


def _product_table_items(connection, cursor, model, tables, role, superuser) -> list[Item]:
    table = model._meta.db_table
    if table not in tables and model is UsageEvent:
        # The product keeps no usage events (its counters are all it has): billing-ops' own table of
        # them is created empty, and each counter's value today becomes an opening-balance event.
        sql = _collect_sql(connection, lambda editor: editor.create_model(model), without_triggers=True)
        return [
            Item(
                ADDS,
                table,
                f"table {table} is missing: adopt creates it (the source rows of the metered counters)",
                sql,
            )
        ]
    if table not in tables:
        columns = ", ".join(f"{f.column} {f.db_type(connection)}" for f in model._meta.concrete_fields)
        return [
            Item(
                BLOCKER,
                table,
                f"table {table} is missing: billing-ops counts from it ({columns})",
                f"Create {table}, or name the product's table in BILLING_OPS_NAMES_FILE "
                f'({{"tables": {{"{_logical_table(model)}": "<the product\'s table>"}}}}); adopt never renames product tables.',
            )
        ]
    items = []
    info = tables[table]
    if not (superuser or info["owned"]):
        items.append(
            Item(
                BLOCKER,
                table,
                f"owned by {info['owner']}, not by {role}: adding constraints and triggers needs the owner",
                f"Run adopt connected as {info['owner']}, or GRANT {info['owner']} TO {role}; "
                "(adopt as the owner; the app may connect as another role afterwards).",
            )
        )
    found = _columns(cursor, info["oid"])
    derived: dict[str, str] = {}  # column -> the expression adopt fills it with (from the month key)
    month = product_column("usage_tracking", "month")
    for field in model._meta.concrete_fields:
        needed = field.db_type(connection)
        if (
            field.column not in found
            and model is UsageTracking
            and field.name in PERIOD_FROM_MONTH
            and month in found
        ):
            bad = 0
            if info["readable"]:
                cursor.execute(f"SELECT count(*) FROM {table} WHERE {month} !~ %s", [MONTH_FORMAT])
                bad = cursor.fetchone()[0]
            if bad:
                items.append(
                    Item(
                        BLOCKER,
                        f"{table}.{field.column}",
                        f"column missing, and {bad} row(s) have a {month} that is not 'YYYY-MM' to fill it from",
                        f"Correct them (SELECT * FROM {table} WHERE {month} !~ '{MONTH_FORMAT}'), then adopt adds it.",
                    )
                )
                continue
            expression = PERIOD_FROM_MONTH[field.name].format(month=month)
            derived[field.column] = expression
            items.append(
                Item(
                    ADDS,
                    f"{table}.{field.column}",
                    f"column missing ({needed}): adopt adds it beside {month} and fills it from it (UTC calendar months)",
                    f"ALTER TABLE {table} ADD COLUMN {field.column} {needed}; "
                    f"UPDATE {table} SET {field.column} = {expression}; "
                    f"ALTER TABLE {table} ALTER COLUMN {field.column} SET NOT NULL;",
                )
            )
            continue
        if field.column not in found:
            if model is Preset and field.name == "last_used_at":
                # A derived counter: added with its true value, as the triggers keep it from then on.
                uses = PresetUsage._meta
                sql = _collect_sql(connection, lambda editor, f=field: editor.add_field(model, f)) + (
                    f" UPDATE {table} p SET {field.column} = (SELECT max(u.{uses.get_field('used_at').column}) "
                    f"FROM {uses.db_table} u WHERE u.{uses.get_field('preset').column} = p.id);"
                )
                items.append(
                    Item(
                        ADDS,
                        f"{table}.{field.column}",
                        f"column missing ({needed}): adopt adds it, filled with each preset's last use",
                        sql,
                    )
                )
            elif field.null or field.has_db_default():
                sql = _collect_sql(connection, lambda editor, f=field: editor.add_field(model, f))
                items.append(Item(ADDS, f"{table}.{field.column}", f"column missing ({needed})", sql))
            else:
                items.append(
                    Item(
                        BLOCKER,
                        f"{table}.{field.column}",
                        f"column missing ({needed}, no default billing-ops could fill it with)",
                        f"Add {table}.{field.column} {needed} and fill it, or name the product's column in "
                        f'BILLING_OPS_NAMES_FILE ({{"columns": {{"{_logical_table(model)}.{field.get_attname()}": '
                        '"<the product\'s column>"}}); adopt never renames product columns.',
                    )
                )
        elif _whole_counter(model, field) and base_type(found[field.column]) in ("integer", "bigint"):
            pass  # a whole-numbered metric's counter in an integer column: the deltas are whole too
        elif base_type(found[field.column]) not in _TYPE_FAMILIES.get(base_type(needed), {base_type(needed)}):
            items.append(
                Item(
                    BLOCKER,
                    f"{table}.{field.column}",
                    f"type {found[field.column]}, billing-ops needs {needed}",
                    f'Name it in BILLING_OPS_NAMES_FILE ("uuid_ids": ["{_logical_table(model)}"]): the models '
                    "then read the product's uuid key; adopt never retypes a product column."
                    if field.primary_key
                    and base_type(found[field.column]) == "uuid"
                    and _logical_table(model) in BIGINT_IDS
                    else f"ALTER TABLE {table} ALTER COLUMN {field.column} TYPE {needed}; "
                    "(adopt never retypes a product column)",
                )
            )
    # Whether the rows allow the missing constraints needs reading them: the owner's run will tell.
    if info["readable"] and all(
        f.column in found or f.column in derived for f in model._meta.concrete_fields
    ):
        items += _constraint_items(connection, cursor, model, info["oid"], derived)
    return items


def _logical_table(model) -> str:
    return {
        m: n
        for m, n in zip(
            PRODUCT_MODELS,
            ("customers", "projects", "presets", "preset_usage", "usage_events", "usage_tracking"),
            strict=True,
        )
    }[model]


def _whole_counter(model, field) -> bool:
    return model is UsageTracking and any(m.counter == field.name and m.whole for m in metrics.METERED)


def _opening_balance_items(cursor) -> list[Item]:
    """Each metered counter's value today, as one event per customer and period (SPEC §2)."""
    events, tracking = UsageEvent._meta.db_table, UsageTracking._meta.db_table
    customer = UsageEvent._meta.get_field("customer").column
    t_customer = UsageTracking._meta.get_field("customer").column
    t_start, t_month = (UsageTracking._meta.get_field(name).column for name in ("period_start", "month"))
    values = ", ".join(
        f"('{m.code}', t.{UsageTracking._meta.get_field(m.counter).column})" for m in metrics.METERED
    )
    # Recorded before billing-ops' triggers are installed: the balances are the counters' values
    # already, so they are not counted again.
    sql = (
        f"INSERT INTO {events} ({customer}, metric, quantity, occurred_at, idempotency_key, reason) "
        f"SELECT t.{t_customer}, m.code, m.n, t.{t_start}, '{OPENING_BALANCE_KEY}' || m.code || ':' || t.{t_month}, "
        "'opening balance at adoption: the counter''s value, which had no source rows' "
        f"FROM {tracking} t CROSS JOIN LATERAL (VALUES {values}) AS m(code, n) WHERE m.n <> 0;"
    )
    return [
        Item(
            ADDS,
            OPENING_BALANCES,
            f"the metered counters of {tracking} have no source rows: adopt records each non-zero counter "
            "as one opening-balance event per customer and period (in the audit log too), so the report "
            "has a truth from day one",
            sql,
        )
    ]


def _constraint_items(connection, cursor, model, oid, derived=None) -> list[Item]:
    """The constraints the counters and consume rely on: adopt adds them unless the rows break them."""
    table, items = model._meta.db_table, []
    derived = derived or {}

    def value(column: str, alias: str = "") -> str:
        """A column, or the expression adopt fills it with when adopt adds it."""
        if column in derived:
            month = product_column("usage_tracking", "month")
            return derived[column].replace(f"({month} ||", f"({alias}{month} ||")
        return f"{alias}{column}"

    for constraint in row_constraints(model):
        if row_constraint_present(cursor, model, constraint):
            continue
        if isinstance(constraint, models.UniqueConstraint):
            columns = [value(model._meta.get_field(name).column) for name in constraint.fields]
            cursor.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE "
                + " AND ".join(f"{c} IS NOT NULL" for c in columns)
                + f" GROUP BY {', '.join(columns)} HAVING count(*) > 1) AS twice"
            )
            broken = cursor.fetchone()[0]
            example = f"SELECT {', '.join(columns)}, count(*) FROM {table} GROUP BY {', '.join(columns)} HAVING count(*) > 1"
        else:
            # The one exclusion billing-ops declares: a customer's periods never overlap.
            c = model._meta.get_field("customer").column
            overlap = (
                f"FROM {table} a JOIN {table} b ON a.{c} = b.{c} AND a.ctid < b.ctid "
                f"AND tstzrange({value('period_start', 'a.')}, {value('period_end', 'a.')}) "
                f"&& tstzrange({value('period_start', 'b.')}, {value('period_end', 'b.')})"
            )
            cursor.execute(f"SELECT count(*) {overlap}")
            broken = cursor.fetchone()[0]
            example = f"SELECT a.{c}, {value('period_start', 'a.')}, {value('period_start', 'b.')} {overlap}"
        if broken:
            items.append(
                Item(
                    BLOCKER,
                    f"{table} {constraint.name}",
                    f"constraint missing, and {broken} group(s) of rows break it",
                    f"Merge or delete those rows ({example}), then adopt adds it.",
                )
            )
            continue
        sql = _collect_sql(connection, lambda editor, c=constraint: editor.add_constraint(model, c))
        items.append(
            Item(
                ADDS,
                f"{table} {constraint.name}",
                "constraint missing (the product never declared it, or migrate --fake-initial left it out): "
                "without it concurrent first writes can create the same row twice",
                sql,
            )
        )
    for index in model._meta.indexes:
        cursor.execute("SELECT 1 FROM pg_class WHERE relname = %s AND relkind = 'i'", [index.name])
        if not cursor.fetchone():
            sql = _collect_sql(connection, lambda editor, i=index: editor.add_index(model, i))
            items.append(Item(ADDS, f"{table} {index.name}", "index the counters read with is missing", sql))
    return items


# The extensions the models' constraints and indexes need, and what for.
EXTENSIONS = {
    "btree_gist": "the disjoint-periods constraint needs it",
    "pg_trgm": "support's search by part of a project's or preset's name needs it (its trigram indexes)",
}


def _extension_items(cursor, superuser) -> list[Item]:
    return [
        item for name, need in EXTENSIONS.items() for item in _extension_item(cursor, superuser, name, need)
    ]


def _extension_item(cursor, superuser, name: str, need: str) -> list[Item]:
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = %s", [name])
    if cursor.fetchone():
        return []
    cursor.execute("SELECT bool_or(trusted) FROM pg_available_extension_versions WHERE name = %s", [name])
    trusted = cursor.fetchone()[0]
    if trusted is None:
        return [
            Item(
                BLOCKER,
                f"extension {name}",
                f"not available on this server ({need})",
                "Install PostgreSQL's contrib package on the server.",
            )
        ]
    cursor.execute("SELECT has_database_privilege(current_database(), 'CREATE')")
    if superuser or (trusted and cursor.fetchone()[0]):
        return [Item(ADDS, f"extension {name}", "not installed", f"CREATE EXTENSION IF NOT EXISTS {name};")]
    return [
        Item(
            BLOCKER,
            f"extension {name}",
            "not installed, and this role cannot install it",
            f"As a superuser (or the database owner): CREATE EXTENSION {name};",
        )
    ]


def _own_object_items(cursor, tables) -> list[Item]:
    """Tables and functions billing-ops creates must not exist already as the product's."""
    items = []
    product = {m._meta.db_table for m in PRODUCT_MODELS}
    for model in apps.get_models(include_auto_created=True):
        table = model._meta.db_table
        if table in tables and table not in product and model._meta.managed:
            items.append(
                Item(
                    BLOCKER,
                    table,
                    f"table {table} exists, and billing-ops creates a table of that name",
                    f"Rename or move the product's {table} (another schema, or DATABASE_URL's options=-csearch_path=...).",
                )
            )
    cursor.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema() AND p.proname = ANY(%s)",
        [list(usage_functions())],
    )
    for (name,) in cursor.fetchall():
        items.append(
            Item(
                BLOCKER,
                f"function {name}",
                "a function of that name exists; adoption would replace it",
                f"Rename the product's {name}().",
            )
        )
    return items


def _trigger_items(cursor, drop_product_counter_triggers: bool) -> list[Item]:
    """The product's triggers: those that write our counters, and pgtrigger_* names."""
    ours = our_trigger_names()
    counters = {m._meta.db_table for m in PRODUCT_MODELS if getattr(m, "counter_fields", ())}
    cursor.execute(
        "SELECT t.tgname, c.relname, p.prosrc FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE NOT t.tgisinternal AND n.nspname = current_schema() ORDER BY c.relname, t.tgname"
    )
    items = []
    for name, table, source in cursor.fetchall():
        if name in ours:
            items.append(
                Item(
                    BLOCKER,
                    f"trigger {name} on {table}",
                    "a trigger with the name of one of billing-ops' exists",
                    f"ALTER TRIGGER {name} ON {table} RENAME TO product_{name.removeprefix('pgtrigger_')};",
                )
            )
            continue
        written = sorted(t for t in counters if re.search(_WRITES.format(table=t), source, re.I))
        if written and drop_product_counter_triggers:
            items.append(
                Item(
                    ADDS,
                    f"trigger {name} on {table}",
                    f"the product's own trigger writes the counters of {', '.join(written)}: adopt drops it "
                    "in the transaction that installs billing-ops' triggers (adopt --uninstall restores it)",
                    f'DROP TRIGGER "{name}" ON "{table}";',
                    trigger=name,
                    table=table,
                )
            )
        elif written:
            items.append(
                Item(
                    BLOCKER,
                    f"trigger {name} on {table}",
                    f"the product's own trigger writes the counters of {', '.join(written)}: billing-ops' "
                    "triggers would count the same rows again",
                    "Run adopt --drop-product-counter-triggers (it drops them in the transaction that "
                    "installs billing-ops' triggers; adopt --uninstall restores them), or drop it yourself.",
                    trigger=name,
                    table=table,
                )
            )
        elif name.startswith("pgtrigger_"):
            items.append(
                Item(
                    NOTE,
                    f"trigger {name} on {table}",
                    "a django-pgtrigger trigger of the product's",
                    "Kept: adopt installs only billing-ops' triggers, and `pgtrigger install` no longer prunes.",
                )
            )
    return items


def _counter_writing_function_items(cursor) -> list[Item]:
    """The product's functions (not triggers) that write counters: refused once adopted (SPEC §4, I5)."""
    counters = {m._meta.db_table for m in PRODUCT_MODELS if getattr(m, "counter_fields", ())}
    cursor.execute(
        "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema() AND p.prorettype <> 'trigger'::regtype "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') ORDER BY 1"
    )
    items = []
    for name, source in cursor.fetchall():
        written = sorted(t for t in counters if re.search(_WRITES.format(table=t), source or "", re.I))
        if written:
            items.append(
                Item(
                    NOTE,
                    f"function {name}",
                    f"writes the counters of {', '.join(written)}: once adopted, those writes are refused",
                    "Change the product to write the source rows (usage_events, projects, preset_usage) "
                    "or call billing_consume(); billing-ops' triggers count them.",
                )
            )
    return items
