"""Deliveries as a WSGI server serves them (SPEC §11, issue 10 item 5): Django's WSGI handler, its
request signals and the connection a thread keeps between requests (CONN_MAX_AGE), as gunicorn's
gthread worker runs it (bench/webhooks.py drives the same handler from several threads).
"""

import tempfile
import time
from datetime import timedelta

import psycopg
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test import Client

from billing.models import CreditGrant, Subscription, WebhookEvent
from billing.services.webhooks import signature_header
from demo import webhook_payloads as wp
from tests.billing.test_webhook_one_statement import C1, C3, S1, _customers, _stripe_sub
from tests.billing.test_webhook_traffic import _now, stripe_event
from tests.billing.test_webhooks import STRIPE_SECRET, wsgi_post

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_SECRET
    settings.WEBHOOK_TOLERANCE_SECONDS = 300


def _events(start, end):
    now = _now()
    upgrade = stripe_event(
        "customer.subscription.updated", _stripe_sub(C1, "price_demo_growth", start, end), created=now
    )
    pack = stripe_event(
        "checkout.session.completed",
        wp.stripe_pack_checkout(customer_id=C1, metric="minutes", quantity=100),
        created=now,
    )
    ignored = stripe_event("charge.succeeded", {"id": "ch_server", "object": "charge"}, created=now)
    return upgrade, pack, ignored


def test_a_delivery_on_a_kept_connection_sends_one_statement_and_no_health_check():
    """Django checks a kept connection with a SELECT 1 round trip at each request's first statement
    (CONN_HEALTH_CHECKS): that was a second round trip per delivery. The protocol trace of libpq
    shows what the server received: the delivery's one statement."""
    now = _now()
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    _customers(start, end)
    upgrade, pack, ignored = _events(start, end)
    handler = WSGIHandler()
    assert wsgi_post(handler, ignored) == "200 OK"  # opens the connection the next requests keep
    kept = connection.connection
    for payload in (upgrade, pack):
        with tempfile.TemporaryFile() as trace:
            kept.pgconn.trace(trace.fileno())
            kept.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                assert wsgi_post(handler, payload) == "200 OK"
            finally:
                kept.pgconn.untrace()
            trace.seek(0)
            sent = [line for line in trace.read().decode().splitlines() if line.startswith("F\t")]
        assert connection.connection is kept
        queries = [line for line in sent if "\tQuery\t" in line]
        assert len(queries) == 1, sent
        assert "billing_webhook_" in queries[0] and "SELECT 1" not in "".join(sent)
    assert Subscription.objects.get(pk=S1).plan.code == "growth"
    assert CreditGrant.objects.get(customer_id=C1).granted == 100


def _terminate(pid: int) -> None:
    """The server drops a connection (a restart, an idle timeout, pg_terminate_backend by a person)."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0] is True
        for _ in range(200):  # the backend exits asynchronously
            if (
                other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]
                == 0
            ):
                return
            time.sleep(0.05)
    pytest.fail(f"backend {pid} did not exit")


@pytest.mark.parametrize("first", ["one statement", "Python path"])
def test_a_connection_the_server_dropped_between_deliveries_is_replaced_and_the_event_applied_once(
    caplog, first
):
    now = _now()
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    _customers(start, end)
    upgrade, pack, ignored = _events(start, end)
    # A subscription new here takes the Python path: its transaction meets the dropped connection.
    new = stripe_event(
        "customer.subscription.created",
        _stripe_sub(C3, "price_demo_pro", start, end, sub_id="sub_server_new"),
        created=now,
    )
    handler = WSGIHandler()
    assert wsgi_post(handler, ignored) == "200 OK"
    pid = connection.connection.info.backend_pid
    _terminate(pid)
    deliveries = (pack, pack, upgrade, new) if first == "one statement" else (new, pack, upgrade, new)
    for payload in deliveries:  # the first finds the connection dead
        assert wsgi_post(handler, payload) == "200 OK"
    assert connection.connection.info.backend_pid != pid
    assert "the database connection was lost" in caplog.text
    assert CreditGrant.objects.get(customer_id=C1).granted == 100
    assert Subscription.objects.get(pk=S1).plan.code == "growth"
    assert Subscription.objects.get(external_subscription_id="sub_server_new").plan.code == "pro"
    assert sorted(WebhookEvent.objects.values_list("status", "attempts")) == [
        ("ignored", 1),
        ("processed", 1),
        ("processed", 1),
        ("processed", 1),
    ]


def test_a_delivery_goes_to_its_view_past_the_admins_middleware(settings, client):
    """Sessions, CSRF, authentication, messages and clickjacking have nothing to do for a processor's
    signed POST (their cost was about a fifth of a delivery's Python time): none of them runs for it;
    the admin keeps them all."""
    from tests.billing.test_webhooks import post

    ignored = stripe_event("charge.succeeded", {"id": "ch_mw", "object": "charge"}, created=_now())
    response = post(client, "stripe", ignored)
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert "X-Frame-Options" not in response.headers and "Vary" not in response.headers
    # Its length is said, as CommonMiddleware says it: without it gunicorn sent the answer chunked.
    assert response.headers["Content-Length"] == str(len(response.content))
    assert client.get("/admin/login/").headers["X-Frame-Options"] == "DENY"


def test_what_still_applies_to_a_delivery(settings, client):
    """A Host outside ALLOWED_HOSTS is 400, a GET is 405, plain HTTP is redirected to HTTPS when
    production asks for it: each writes nothing."""
    from tests.billing.test_webhooks import post

    ignored = stripe_event("charge.succeeded", {"id": "ch_still", "object": "charge"}, created=_now())
    settings.ALLOWED_HOSTS = ["billing.example.com"]
    assert post(client, "stripe", ignored).status_code == 400  # the test client's Host: testserver
    host = {"HTTP_HOST": "billing.example.com"}
    assert client.get("/webhooks/stripe/", **host).status_code == 405
    assert client.get("/webhooks/paddle/", **host).status_code == 405
    data = wp.body(ignored)

    def deliver():  # a new client: SecurityMiddleware reads its settings when the handler starts
        return Client().post(
            "/webhooks/stripe/",
            data=data,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=signature_header("stripe", data, STRIPE_SECRET),
            **host,
        )

    settings.SECURE_SSL_REDIRECT = True
    response = deliver()
    assert response.status_code == 301 and response.headers["Location"].startswith(
        "https://billing.example.com/"
    )
    assert not WebhookEvent.objects.exists()
    settings.SECURE_SSL_REDIRECT = False
    assert deliver().status_code == 200 and WebhookEvent.objects.count() == 1
