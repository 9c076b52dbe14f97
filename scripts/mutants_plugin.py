"""pytest plugin for `make mutants` (loaded with -p by scripts/mutants.py, never by `make test`).

- Writes a fingerprint of what the migrations put in the test database (functions, triggers,
  constraints, indexes, the role groups' permissions) to $MUTANTS_FINGERPRINT, so the runner can check
  that a mutant of SQL, a trigger or a role migration really reached the database.
- Reports a failing Hypothesis example as found, without shrinking it: a mutant only needs a failure.
"""

import json
import os

import pytest
from hypothesis import Phase, settings

settings.register_profile("mutants", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None)
settings.load_profile("mutants")

SECTIONS = {
    "functions": "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', p.prosrc "
    "FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace",
    "triggers": "SELECT t.tgname, pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text FROM pg_trigger t WHERE NOT t.tgisinternal",
    "constraints": "SELECT c.conrelid::regclass::text || '.' || c.conname, pg_get_constraintdef(c.oid) "
    "FROM pg_constraint c WHERE c.connamespace = current_schema()::regnamespace",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()",
    "roles": "SELECT g.name, ct.app_label || '.' || p.codename FROM auth_group g "
    "JOIN auth_group_permissions gp ON gp.group_id = g.id JOIN auth_permission p ON p.id = gp.permission_id "
    "JOIN django_content_type ct ON ct.id = p.content_type_id",
}


@pytest.fixture(scope="session", autouse=True)
def _mutants_fingerprint(django_db_setup, django_db_blocker):
    path = os.environ.get("MUTANTS_FINGERPRINT")
    if path:
        from django.db import connection

        fingerprint = {}
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            for section, sql in SECTIONS.items():
                cursor.execute(sql)
                fingerprint[section] = sorted([str(a), str(b)] for a, b in cursor.fetchall())
        with open(path, "w") as out:
            json.dump(fingerprint, out)
    yield
