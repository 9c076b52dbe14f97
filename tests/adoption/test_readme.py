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
