"""Finding 1: the README's adoption steps, run exactly as written, against a product database."""

import re
import shlex

import psycopg
import pytest

from tests.adoption import product
from tests.adoption.conftest import build, drop
from tests.adoption.test_adoption import checksums, recount_drift
from tests.conftest import ROOT


def readme_steps() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Adopting an existing product database", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)[1]
    steps = []
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if command.startswith("export DATABASE_URL="):
            continue  # the test's own product database stands in for it
        assert command.startswith(".venv/bin/python manage.py "), line
        steps.append(shlex.split(command)[2:])
    return steps


def test_the_readme_walk_through_adopts_the_exact_shape():
    db = build(product.EXACT_DDL, product.EXACT_DATA, product.DRIFT_SQL)
    try:
        steps = readme_steps()
        assert steps[0] == ["adopt", "--check"]  # the preflight comes first
        rows = checksums(db)
        for args in steps:
            result = db.manage(*args)
            assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        assert recount_drift(db) == []
        others = [t for t in rows if t not in ("usage_tracking", "presets")]
        assert checksums(db, others) == {t: rows[t] for t in others}
        # What the README says the product's own counter code now meets.
        with pytest.raises(psycopg.errors.CheckViolation):
            db.sql("UPDATE usage_tracking SET ai_interactions_count = ai_interactions_count + 1")
    finally:
        drop(db)


def supabase_steps() -> tuple[dict[str, str], list[list[str]]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Adopting a Supabase-style schema", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)[1]
    exports, steps = {}, []
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if command.startswith("export "):
            name, _, value = command.removeprefix("export ").partition("=")
            exports[name] = value
            continue
        assert command.startswith(".venv/bin/python manage.py "), line
        steps.append(shlex.split(command)[2:])
    return exports, steps


def test_the_readme_walk_through_adopts_the_supabase_shape():
    from tests.adoption.test_supabase import DRIFT

    db = build(product.SUPABASE_DDL, product.SUPABASE_DATA, DRIFT)
    try:
        exports, steps = supabase_steps()
        assert set(exports) == {"DATABASE_URL", "BILLING_OPS_NAMES_FILE"}  # the test's database stands in
        db.names_file = exports["BILLING_OPS_NAMES_FILE"]  # relative to the checkout, as the README runs
        assert steps[0][:2] == ["adopt", "--check"]
        for args in steps:
            result = db.manage(*args)
            assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        result = db.manage("usage_discrepancies", "--fail-on-drift")
        assert result.returncode == 0, result.stdout + result.stderr
        with pytest.raises(psycopg.errors.CheckViolation):  # the product's RPC counter write
            db.sql("SELECT increment_ai_usage(id) FROM users LIMIT 1")
    finally:
        drop(db)
