"""Least privilege in the database (SPEC §10): the owner role and the app role, as SQL.

The owner role owns the schema's tables and functions and runs ``migrate``; the app role is what the
web processes, the cron commands and the product connect as. The app role can read and write rows
and call every function, and nothing else: it owns nothing, so it cannot ALTER TABLE ... DISABLE TRIGGER; it holds no TRUNCATE, TRIGGER or
REFERENCES privilege; it is no superuser, so it cannot SET session_replication_role; it
can create no object at all (no CREATE on any schema, no TEMPORARY on the database, not even through
PUBLIC), so no trigger, rule, view or function of its own can run its writes at trigger depth 1, where
the counter guards let the counter triggers' own writes through; it cannot write
usage_counter_write_grants, so the counter guard opens only inside the owner's SECURITY DEFINER
recount functions; and it appends to audit_log only through billing_audit_append(), the owner's SECURITY DEFINER
function (no INSERT, UPDATE or DELETE; TRUNCATE is refused by a trigger for every role).

The SQL is idempotent: applying it again changes nothing, and it hands objects that another role
created (a database migrated by a superuser) to the owner role. Apply it before the first migrate
(it creates the roles) and after each migrate (tables that migrate added get the app's grants from
the default privileges; the revokes on audit_log need the table to exist).
"""

import re

from django.db import connection, transaction

from usage.text import echo

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
BAD_ROLE = "role names are lower-case letters, digits and _ (at most 63, not starting with a digit): {name}"
SAME_ROLE = "the owner role and the app role must differ (the app must own nothing)"
SYSTEM_SCHEMA = "schema {name} is PostgreSQL's own: the app role must get no privilege on it"

_SQL = """\
-- billing-ops database roles (manage.py db_roles; SPEC §10). Run as a superuser or the database's owner.
-- {owner}: owns the schema's objects, runs migrate. {app}: the app, the cron commands and the product.
-- Set their passwords yourself: ALTER ROLE {owner} PASSWORD '...'; ALTER ROLE {app} PASSWORD '...';
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner}') THEN
        CREATE ROLE {owner} LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{app}') THEN
        CREATE ROLE {app} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{app}'
               AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role {app} has SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS: take them away first';
    END IF;
    IF pg_has_role('{app}', '{owner}', 'MEMBER') THEN
        RAISE EXCEPTION 'role {app} is a member of {owner} (SET ROLE would give it everything): REVOKE {owner} FROM {app}';
    END IF;
END
$roles$;

GRANT CONNECT ON DATABASE {database} TO {app};
-- No temporary objects: a trigger on a temporary table of the app's ran past the counter guards.
REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC;
REVOKE TEMPORARY ON DATABASE {database} FROM {app};
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {database} TO {owner};
GRANT USAGE, CREATE ON SCHEMA {schema} TO {owner};
REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC;
REVOKE CREATE ON SCHEMA {schema} FROM {app};
GRANT USAGE ON SCHEMA {schema} TO {app};
DO $nothing_of_its_own$
DECLARE
    where_ text;
BEGIN
    SELECT string_agg(n.nspname, ', ') INTO where_ FROM pg_namespace n
    WHERE has_schema_privilege('{app}', n.oid, 'CREATE');
    IF where_ IS NOT NULL THEN
        RAISE EXCEPTION 'role {app} can create objects in schema(s) %: REVOKE CREATE ON SCHEMA ... FROM {app} (and FROM PUBLIC)', where_;
    END IF;
    IF has_database_privilege('{app}', current_database(), 'TEMPORARY') THEN
        RAISE EXCEPTION 'role {app} can still create temporary tables (through a role it belongs to?)';
    END IF;
END
$nothing_of_its_own$;

-- Everything in the schema belongs to the owner (tables take their own sequences with them).
DO $owner$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
        WHERE c.relnamespace = '{schema}'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND c.relowner <> '{owner}'::regrole
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.deptype IN ('a', 'i', 'e'))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO {owner}',
                       CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                      WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, r.name);
    END LOOP;
    FOR r IN
        SELECT p.oid::regprocedure AS name FROM pg_proc p
        WHERE p.pronamespace = '{schema}'::regnamespace AND p.proowner <> '{owner}'::regrole
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                          AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO {owner}', r.name);
    END LOOP;
END
$owner$;

-- The app: rows and functions, nothing else.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {app};
REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {schema} FROM {app};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {app};
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {app};
DO $revoke$
BEGIN
    IF to_regclass('{schema}.usage_counter_write_grants') IS NOT NULL THEN
        REVOKE ALL ON {schema}.usage_counter_write_grants FROM {app};
    END IF;
    IF to_regclass('{schema}.audit_log') IS NOT NULL THEN
        -- Appending goes through billing_audit_append() (SECURITY DEFINER, the owner's).
        REVOKE INSERT, UPDATE, DELETE ON {schema}.audit_log FROM {app};
        IF pg_get_serial_sequence('{schema}.audit_log', 'id') IS NOT NULL THEN
            EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM {app}', pg_get_serial_sequence('{schema}.audit_log', 'id'));
        END IF;
    END IF;
END
$revoke$;
-- Tables and functions later migrations create (as the owner) get the same grants.
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {app};
"""


def db_roles_sql(*, owner: str, app: str, database: str, schema: str = "public") -> str:
    """The SQL that creates (or checks) the two roles and sets their privileges; ValueError on bad names."""
    for name in (owner, app, schema):
        if not ROLE_NAME.fullmatch(name or ""):
            raise ValueError(BAD_ROLE.format(name=echo(name)))
    if owner == app:
        raise ValueError(SAME_ROLE)
    # It would grant the app role writes on the system catalogs (pg_trigger's tgenabled among them).
    if schema.startswith("pg_") or schema == "information_schema":
        raise ValueError(SYSTEM_SCHEMA.format(name=echo(schema)))
    quoted_db = '"' + database.replace('"', '""') + '"'
    return _SQL.format(owner=owner, app=app, database=quoted_db, schema=schema)


def db_roles_apply(*, owner: str, app: str, schema: str = "public") -> None:
    """Apply db_roles_sql to the connected database, in one transaction."""
    sql = db_roles_sql(owner=owner, app=app, database=connection.settings_dict["NAME"], schema=schema)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
