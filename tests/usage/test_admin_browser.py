"""Support's flow in a real browser (Debian's chromium via Playwright) against a live server."""

import os
import shutil
import tempfile

import pytest

from tests.factories import CustomerFactory, ProjectFactory

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium not installed (scripts/ensure-chromium installs it)"
    ),
]

# Playwright's sync API runs an event loop in this thread; the ORM calls below are plain sync code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=BROWSER_ARGS, headless=True
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        # Inside Playwright's greenlet Django hands out its own connections: close them here, or
        # the test database cannot be dropped.
        from django.db import connections

        connections.close_all()


def test_support_finds_a_customer_sees_counters_and_archiving_moves_them(
    live_server, page, django_user_model
):
    django_user_model.objects.create_superuser("support", "support@example.com", "pw-for-tests")
    customer = CustomerFactory(email="Drifty@Example.com")
    ProjectFactory(customer=customer, name="Podcast")
    ProjectFactory(customer=customer, name="Webinar")

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "support")
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    page.click("a:text-is('Customers')")  # the app list, not the dashboard's "customers with drift"
    page.fill("#searchbar", "drifty@example.com")
    page.press("#searchbar", "Enter")
    page.click("text=Drifty@Example.com")

    periods = page.locator("#usage_periods-group")
    assert periods.locator("td.field-active_projects").first.inner_text() == "2"
    assert periods.locator("input[name$=active_projects_count]").count() == 0  # read-only

    page.goto(f"{live_server.url}/admin/usage/project/?q=drifty@example.com")  # by its customer
    page.click("text=Webinar")
    page.select_option("#id_status", "archived")
    page.click("input[name=_save]")
    assert "was changed successfully" in page.inner_text(".messagelist")

    page.goto(f"{live_server.url}/admin/usage/customer/{customer.pk}/change/")
    assert page.locator("#usage_periods-group td.field-active_projects").first.inner_text() == "1"


def test_support_recounts_an_s1_customer_in_the_browser(live_server, page, django_user_model, roles):
    from django.contrib.auth.models import Group

    from tests.conftest import plant_s1

    user = django_user_model.objects.create_user("sam", password="pw-for-tests", is_staff=True)
    user.groups.add(Group.objects.get(name="Support"))
    s1 = plant_s1()

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "sam")
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/usage/customer/?q={s1['six'].email}")
    page.click(f"text={s1['six'].email}")
    line = page.locator("tr.counter-line[data-check=active_projects]")
    assert "drifted" in line.get_attribute("class")
    assert (line.locator("td.tracked").inner_text(), line.locator("td.actual").inner_text()) == ("0", "6")

    page.click("#recount-button")
    assert "1 counter set to the truth" in page.inner_text(".messagelist")
    line = page.locator("tr.counter-line[data-check=active_projects]")
    assert "drifted" not in (line.get_attribute("class") or "")
    assert line.locator("td.tracked").inner_text() == "6"
    assert "6 / 1 active projects (600 %) on Free" in page.inner_text("#findings")
