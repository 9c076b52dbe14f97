"""Product databases of their own on the test server, built by raw DDL, and manage.py run against them."""

import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.db import connections

from tests.adoption import product
from tests.conftest import ROOT

OWNER = "product_owner"  # owns the product's tables, as the product's migrations made them
APP_ROLE = "billing_ops_app"  # the README's separate billing_ops@ login, not the owner


def _server() -> dict:
    params = connections["default"].get_connection_params()
    return {"host": params["host"], "port": params["port"], "user": params.get("user") or "postgres"}


def _admin(dbname="postgres") -> psycopg.Connection:
    return psycopg.connect(**_server(), dbname=dbname, autocommit=True)


class ProductDB:
    def __init__(self, name: str):
        self.name = name
        self.names_file = None  # the product's names (usage/names.py), for every manage.py run

    def url(self, role: str = OWNER) -> str:
        server = _server()
        return f"postgres://{role}@:{server['port']}/{self.name}?host={server['host']}"

    def connect(self, role: str = OWNER) -> psycopg.Connection:
        return psycopg.connect(**{**_server(), "user": role}, dbname=self.name, autocommit=True)

    def sql(self, statement: str, params=None, role: str = OWNER):
        with self.connect(role) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else None

    def manage(self, *args, role: str = OWNER, timeout=300, names_file=None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("EMBEDDED_DBNAME", "BILLING_OPS_NAMES_FILE")}
        env["DATABASE_URL"] = self.url(role)
        if names_file or self.names_file:
            env["BILLING_OPS_NAMES_FILE"] = str(names_file or self.names_file)
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=timeout,
        )


def build(*sql: str, roles=(OWNER, APP_ROLE)) -> ProductDB:
    name = f"product_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        for role in roles:
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE DATABASE {name} OWNER {OWNER}")
    with _admin(name) as conn:
        conn.execute(f"ALTER SCHEMA public OWNER TO {OWNER}")
    db = ProductDB(name)
    with db.connect() as conn:
        for statement in sql:
            conn.execute(statement)
    return db


def drop(db: ProductDB) -> None:
    with _admin() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")


@pytest.fixture
def exact_db():
    """The exact shape with its data, its own counter trigger and the planted drift."""
    db = build(product.EXACT_DDL, product.EXACT_COUNTER_TRIGGER, product.EXACT_DATA, product.DRIFT_SQL)
    yield db
    drop(db)


@pytest.fixture
def supabase_db():
    db = build(product.SUPABASE_DDL, product.SUPABASE_DATA)
    yield db
    drop(db)
