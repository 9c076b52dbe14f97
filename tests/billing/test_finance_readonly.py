"""Finance is read-only for real (SPEC §7, §9 S10): a whole finance session writes no row anywhere.

Every table (row count and an md5 of its rows' text) and every sequence is snapshotted, then a Finance
login walks everything the admin lets it reach: every link from the index, every list with its filters,
pages, sorting and exports, a few of each list's objects and their history, every action the role is
offered, posted on a selection, and posts to the change, add and delete pages it can see. The snapshot
afterwards must be identical, and no page may answer 500.
"""

import re
from collections import Counter, deque
from html import unescape
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest
from django.core.management import call_command
from django.db import connection

from tests.conftest import plant_s1

pytestmark = pytest.mark.django_db

MAX_PAGES = 160
PER_PATH = 4  # variants of one kind of query string (same parameters) on one list
PER_MODEL_OBJECTS = 3  # objects opened per model
HREF = re.compile(r'href="([^"#]*)"')
ACTION_OPTION = re.compile(r'<option value="([a-z_]+)"')
SELECTED = re.compile(r'name="_selected_action" value="([^"]+)"')
OBJECT_PAGE = re.compile(r"^(/admin/[^/]+/[^/]+/)[^/]+/(change|history|delete)/$")


def database_snapshot() -> dict:
    """Every user table (row count, md5 of its rows in a fixed order) and every sequence's position."""
    snapshot = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND schemaname NOT LIKE 'pg_temp%' "
            "ORDER BY 1"
        )
        for (table,) in cursor.fetchall():
            cursor.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t"
            )
            snapshot[table] = cursor.fetchone()
        cursor.execute(
            "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
            "WHERE schemaname NOT LIKE 'pg_temp%'"
        )
        snapshot.update({f"sequence {name}": value for name, value in cursor.fetchall()})
    return snapshot


def finance_session(client) -> list[tuple[str, str, int]]:
    """Walk and poke everything a logged-in client reaches from the admin index; (method, url, status)."""
    seen: set[str] = set()
    per_path: Counter = Counter()
    per_model: Counter = Counter()
    queue = deque(["/admin/"])
    log = []
    while queue and len(seen) < MAX_PAGES:
        url = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        response = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content  # exports run
        log.append(("GET", url, response.status_code))
        if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
            continue
        html = body.decode()
        for href in HREF.findall(html):
            target = urljoin(url, unescape(href))
            parts = urlsplit(target)
            if parts.netloc or not parts.path.startswith("/admin/") or target in seen:
                continue
            if parts.path.startswith(("/admin/logout", "/admin/password_change", "/admin/jsi18n")):
                continue
            if (object_page := OBJECT_PAGE.match(parts.path)) and parts.path.endswith("/change/"):
                per_model[object_page.group(1)] += 1
                if per_model[object_page.group(1)] > PER_MODEL_OBJECTS:
                    continue
            if parts.query:  # a few of each kind of filter, sort and page of each list
                kind = (parts.path, frozenset(key for key, _ in parse_qsl(parts.query)))
                per_path[kind] += 1
                if per_path[kind] > PER_PATH:
                    continue
            # Finance's own pages and what they link to first, then the rest of the admin.
            if "/finance/" in url or "/finance/" in target:
                queue.appendleft(target)
            else:
                queue.append(target)
        if OBJECT_PAGE.match(urlsplit(url).path) and url.endswith("/change/"):
            # Saving a page it can only view: refused, nothing written.
            response = client.post(url, {"name": "changed", "_save": "Save"})
            log.append(("POST", url, response.status_code))
            delete = url.removesuffix("change/") + "delete/"
            response = client.post(delete, {"post": "yes"})
            log.append(("POST", delete, response.status_code))
        if 'name="action"' in html and not urlsplit(url).query:
            ids = SELECTED.findall(html)[:5]
            for action in set(
                ACTION_OPTION.findall(html.split('name="action"', 1)[1].split("</select>", 1)[0])
            ):
                data = {"action": action, "_selected_action": ids, "index": "0", "plan": "starter"}
                response = client.post(url, data)
                log.append(("POST", f"{url} {action}", response.status_code))
                response = client.post(url, {**data, "confirm": "yes", "post": "yes", "reason": "finance"})
                log.append(("POST", f"{url} {action} confirmed", response.status_code))
            add = url.rstrip("/") + "/add/"
            response = client.post(add, {"name": "added", "email": "added@example.com", "reason": "x"})
            log.append(("POST", add, response.status_code))
    return log


@pytest.fixture
def populated(db):
    """The demo's population (every plan, credits, webhooks, scenarios), S1 drift and a recorded run."""
    call_command("demo_data", "--allow-debug-off", "--customers", "12", "--seed", "5", verbosity=0)
    plant_s1(prefix="extra")
    from billing.ops.integrity import discrepancy_report

    discrepancy_report(started_by="cron", scope="all customers")


def test_a_finance_session_writes_nothing_anywhere(populated, staff_client):
    finance = staff_client("fay", "Finance")  # the login itself (session, last_login) comes before
    before = database_snapshot()
    log = finance_session(finance)
    after = database_snapshot()

    changed = {table: (before.get(table), after.get(table)) for table in before.keys() | after.keys()}
    changed = {table: pair for table, pair in changed.items() if pair[0] != pair[1]}
    assert changed == {}, f"a finance session changed {sorted(changed)}"
    assert not [entry for entry in log if entry[2] >= 500], "server errors"
    # The walk really went places: lists, objects, actions (the report action among them).
    visited = {url for method, url, status in log if method == "GET" and status == 200}
    assert "/admin/usage/customer/" in visited and "/admin/billing/creditgrant/" in visited
    assert any("/change/" in url for url in visited)
    assert ("POST", "/admin/usage/customer/ discrepancy_report_action", 200) in log
    # Finance's own pages, their exports and the drill-down, reached from the dashboard.
    for page in ("usage/", "usage.csv", "over-limit/", "over-limit.csv", "credit/", "credit.csv", "trends/"):
        assert any(url.startswith(f"/admin/finance/{page}") for url in visited), page
    assert any(url.startswith("/admin/usage/usagetracking/?") and "plan=" in url for url in visited)


def test_finance_sees_its_discrepancy_report_is_not_recorded(staff_client, populated):
    from usage.models import ReconciliationRun

    s1 = plant_s1()
    runs = ReconciliationRun.objects.count()
    response = staff_client("fay", "Finance").post(
        "/admin/usage/customer/",
        {"action": "discrepancy_report_action", "_selected_action": [str(c.pk) for c in s1.values()]},
    )
    html = response.content.decode()
    assert "drifted counters: 3" in html and 'id="not-recorded"' in html
    assert ReconciliationRun.objects.count() == runs
    # Support's report of the same customers is history.
    response = staff_client("sam", "Support").post(
        "/admin/usage/customer/",
        {"action": "discrepancy_report_action", "_selected_action": [str(c.pk) for c in s1.values()]},
    )
    assert "Recorded as" in response.content.decode()
    assert ReconciliationRun.objects.count() == runs + 1
