"""``manage.py adopt`` and ``adopt --uninstall`` (SPEC §2): add billing-ops to a product database, and
take it out again, leaving the product's tables, rows, keys, indexes and triggers as they were.

Adoption only adds, in one transaction (a failure leaves nothing behind), in an order that works:
what the preflight lists as "adds" (btree_gist, then columns with defaults, the constraints the
counters need, their indexes), the counter functions, billing-ops' own usage tables, the counter
triggers (only billing-ops' own: nothing is pruned), the usage migrations recorded as applied (their
tables exist: the product's), then ``migrate`` for billing-ops' own apps. The catalog as it was is
kept in ``billing_ops_adoption`` for the uninstall. The product's own counter triggers would count
the same rows twice: adoption refuses them unless told to drop them (the uninstall restores them).
"""

import json
from importlib import import_module

import pgtrigger
from django.apps import apps
from django.core.management import call_command
from django.db import connections, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder

from billing.adoption import PRODUCT_MODELS
from billing.adoption.catalog import catalog_snapshot
from billing.adoption.preflight import (
    ADDS,
    ADOPTION_TABLE,
    OPENING_BALANCE_KEY,
    OPENING_BALANCES,
    Preflight,
    adoption_preflight,
)
from billing.models import AuditLog
from usage.models import UsageEvent
from usage.selectors import sql_definitions
from usage.sql_functions import sql_functions_install

NOT_ADOPTED = "this database was not adopted (no billing_ops_adoption table): nothing to uninstall"
ALREADY_ADOPTED = (
    "this database is already adopted: nothing to do (`manage.py migrate` upgrades billing-ops in it)"
)


class AdoptionRefused(Exception):
    def __init__(self, preflight: Preflight):
        super().__init__("the database is not ready for adoption")
        self.preflight = preflight


class NotAdopted(Exception):
    pass


class AlreadyAdopted(Exception):
    pass


def adoption_install(*, drop_product_counter_triggers: bool = False, using: str = "default") -> Preflight:
    preflight = adoption_preflight(drop_product_counter_triggers=drop_product_counter_triggers, using=using)
    if preflight.adopted:
        raise AlreadyAdopted(ALREADY_ADOPTED)
    if not preflight.ready:
        raise AdoptionRefused(preflight)
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        before = catalog_snapshot(cursor)
        cursor.execute(
            f"CREATE TABLE {ADOPTION_TABLE} (adopted_at timestamptz NOT NULL DEFAULT now(), "
            "catalog jsonb NOT NULL, dropped_triggers jsonb NOT NULL)"
        )
        adds = [i for i in preflight.items if i.kind == ADDS]
        dropped = []
        for item in sorted(adds, key=lambda i: not i.subject.startswith("extension ")):
            if item.trigger:  # the product's own counter trigger: kept for the uninstall
                cursor.execute(
                    "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = %s AND tgrelid = %s::regclass",
                    [item.trigger, item.table],
                )
                dropped.append(cursor.fetchone()[0])
            cursor.execute(item.fix)
        cursor.execute(
            f"INSERT INTO {ADOPTION_TABLE} (catalog, dropped_triggers) VALUES (%s, %s)",
            [json.dumps(before), json.dumps(dropped)],
        )
        sql_functions_install(sql_definitions(), using=using)
        product = set(PRODUCT_MODELS)
        with connection.schema_editor(atomic=False) as editor:
            for model in apps.get_app_config("usage").get_models():
                if model not in product and model._meta.managed:
                    editor.create_model(model)
        # billing-ops' own usage objects that a migration makes in SQL, not from a model (the
        # migrations are recorded as applied below, without running).
        cursor.execute(import_module("usage.migrations.0017_drift_rows").SQL)
        cursor.execute(import_module("usage.migrations.0020_search_indexes").DRIFT_ROWS_INDEX)
        for model, trigger in pgtrigger.registered():
            if model in product:
                trigger.install(model, database=using)
        recorder = MigrationRecorder(connection)
        recorder.ensure_schema()
        for app, name in sorted(MigrationLoader(connection).graph.nodes):
            if app == "usage":
                recorder.record_applied(app, name)
        call_command("migrate", database=using, interactive=False, verbosity=0)
        if any(i.subject == OPENING_BALANCES for i in adds):
            _audit_opening_balances(cursor)
    return preflight


def _audit_opening_balances(cursor) -> None:
    """One audit row per opening-balance event: what the counter was, and the event that now holds it."""
    events = UsageEvent._meta.db_table
    customer = UsageEvent._meta.get_field("customer").column
    cursor.execute(
        f"INSERT INTO {AuditLog._meta.db_table} (at, actor, action, target_type, target_id, customer_id, before, after, reason) "
        f"SELECT now(), 'manage.py adopt', %s, 'usage_event', e.id::text, e.{customer}, NULL, "
        "jsonb_build_object('metric', e.metric, 'quantity', e.quantity, 'occurred_at', e.occurred_at, "
        "'idempotency_key', e.idempotency_key), e.reason "
        f"FROM {events} e WHERE e.idempotency_key LIKE %s ORDER BY e.{customer}, e.occurred_at, e.metric",
        [AuditLog.Action.OPENING_BALANCE, OPENING_BALANCE_KEY + "%"],
    )


def adoption_uninstall(*, using: str = "default") -> None:
    """Remove exactly what adoption added (the catalog diff) and restore the product's triggers."""
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [ADOPTION_TABLE])
        if not cursor.fetchone()[0]:
            raise NotAdopted(NOT_ADOPTED)
        cursor.execute(f"SELECT catalog, dropped_triggers FROM {ADOPTION_TABLE}")
        before, dropped = cursor.fetchone()
        if isinstance(before, str):
            before, dropped = json.loads(before), json.loads(dropped)
        now = catalog_snapshot(cursor)
        tables = {row[0] for row in before["tables"]}

        def added(kind):
            was = {json.dumps(row) for row in before[kind]}
            return [row for row in now[kind] if json.dumps(row) not in was]

        for table, name, _definition, _enabled in added("triggers"):
            if table in tables:
                cursor.execute(f'DROP TRIGGER IF EXISTS "{name}" ON "{table}"')
        for table, name, _definition in added("constraints"):
            if table in tables:
                cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT IF EXISTS "{name}"')
        for table, name, _definition in added("indexes"):
            if table in tables:
                cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
        for table, column, *_ in added("columns"):
            if table in tables and [table, column] not in [r[:2] for r in before["columns"]]:
                cursor.execute(f'ALTER TABLE "{table}" DROP COLUMN IF EXISTS "{column}"')
        for (table,) in added("tables"):
            # A view (usage_drift) is listed with the tables; one dropped by an earlier CASCADE is gone.
            cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [f'"{table}"'])
            kind = cursor.fetchone()
            if kind:
                cursor.execute(f'DROP {"VIEW" if kind[0] == "v" else "TABLE"} IF EXISTS "{table}" CASCADE')
        for (sequence,) in added("sequences"):
            cursor.execute(f'DROP SEQUENCE IF EXISTS "{sequence}" CASCADE')
        for name, arguments, _source in added("functions"):
            cursor.execute(f'DROP FUNCTION IF EXISTS "{name}"({arguments}) CASCADE')
        for (extension,) in added("extensions"):
            cursor.execute(f'DROP EXTENSION IF EXISTS "{extension}"')
        for definition in dropped:
            cursor.execute(definition)
