"""The health endpoint (SPEC §13): 200 when the database answers and the counter triggers are
healthy, 503 otherwise, and nothing in the body but counts. The unreachable-database case runs on a
real server process in tests/test_production.py."""

import json
import logging

import pytest
from django.db import connection

from billing.ops.checks import trigger_health
from usage.models import Project

pytestmark = pytest.mark.django_db


def projects_on_insert():
    return next(t for t in Project._meta.triggers if t.name == "projects_on_insert").get_pgid(Project)


def test_healthy_answers_200_with_counts_only(client):
    expected = len(trigger_health())
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {
        "status": "ok",
        "database": "ok",
        "triggers": {"healthy": expected, "unhealthy": 0},
    }


def test_a_disabled_trigger_answers_503_and_names_it_only_in_the_log(client, caplog):
    total = len(trigger_health())
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute(f"ALTER TABLE projects DISABLE TRIGGER {projects_on_insert()}")
    with caplog.at_level(logging.WARNING, logger="billing.health"):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert json.loads(response.content) == {
        "status": "unhealthy",
        "database": "ok",
        "triggers": {"healthy": total - 1, "unhealthy": 1},
    }
    assert b"projects_on_insert" not in response.content
    assert [r.getMessage() for r in caplog.records if r.name == "billing.health"] == [
        "health: counter trigger projects_on_insert: disabled (ALTER TABLE ... ENABLE TRIGGER, or pgtrigger enable)"
    ]


def test_no_login_needed_and_only_get_or_head(client):
    assert client.head("/healthz").status_code == 200
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
