"""No 500 from outside input at the webhook endpoints (SPEC §10, issue 9 item 6).

Signed events whose fields have the wrong JSON type, a value out of range or characters PostgreSQL
cannot store are stored failed with the reason (200, nothing else written); absurd headers and
bodies are refused before any work (400/413, nothing written).
"""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import WebhookEvent
from billing.services.webhooks import signature_header
from demo import webhook_payloads as wp
from demo.data import plans_ensure
from tests.billing.test_webhooks import PADDLE_SECRET, STRIPE_SECRET, post, state
from tests.factories import CustomerFactory
from usage.horizon import PERIOD_HORIZON

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_SECRET
    settings.PADDLE_WEBHOOK_SECRET = PADDLE_SECRET
    settings.WEBHOOK_TOLERANCE_SECONDS = 300


def stripe_sub(customer, **changes):
    now = timezone.now().replace(microsecond=0)
    sub = wp.stripe_subscription(
        sub_id="sub_input",
        customer_id=customer.pk,
        price_id="price_demo_growth",
        status="active",
        start=now,
        end=now + timedelta(days=30),
    )
    for path, value in changes.items():
        target = sub
        *parents, last = path.split("__")
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        target[last] = value
    return wp.stripe_event("customer.subscription.updated", sub, created=now)


def pack(customer, **meta):
    session = wp.stripe_pack_checkout(customer_id=customer.pk, metric="minutes", quantity=100)
    session["metadata"].update(meta)
    return wp.stripe_event("checkout.session.completed", session, created=timezone.now())


BAD_STRIPE_FIELDS = {
    "customer id not a UUID": (
        lambda c: stripe_sub(c, metadata__customer_id="42; DROP"),
        "not a customer id",
    ),
    "customer id a list": (lambda c: stripe_sub(c, metadata__customer_id=[1]), "not a customer id"),
    "metadata a list": (lambda c: stripe_sub(c, metadata=["x"]), "data.object.metadata: expected an object"),
    "items a string": (lambda c: stripe_sub(c, items="x"), "data.object.items: expected an object"),
    "items.data an object": (lambda c: stripe_sub(c, items__data={}), "items.data: expected a list"),
    "price a number": (lambda c: stripe_sub(c, items__data__0__price=5), "price: expected an object"),
    "status a number": (lambda c: stripe_sub(c, status=5), "status: expected a non-empty string"),
    "id an object": (lambda c: stripe_sub(c, id={"a": 1}), "data.object.id: expected a non-empty string"),
    "period a string": (lambda c: stripe_sub(c, current_period_end="soon"), "expected a Unix time"),
    "period end huge": (lambda c: stripe_sub(c, current_period_end=10**15), "outside the accepted range"),
    "period end 9999": (
        lambda c: stripe_sub(c, current_period_end=253402300799),
        "outside the accepted range",
    ),
    "period a float": (lambda c: stripe_sub(c, current_period_end=1.5e9), "expected a Unix time"),
    "pack quantity 1e30": (lambda c: pack(c, quantity="1e30"), "positive number"),
    "pack quantity 1E+5000": (lambda c: pack(c, quantity="1E+5000"), "positive number"),
    "pack quantity an object": (lambda c: pack(c, quantity={"n": 1}), "quantity: expected a number"),
    "pack metric a list": (lambda c: pack(c, metric=["minutes"]), "metric: expected a non-empty string"),
    "pack customer not a UUID": (lambda c: pack(c, customer_id="abc"), "not a customer id"),
}


@pytest.mark.parametrize("case", BAD_STRIPE_FIELDS, ids=list(BAD_STRIPE_FIELDS))
def test_signed_stripe_events_with_bad_fields_are_stored_failed_with_the_reason(client, case):
    plans_ensure()
    customer = CustomerFactory()
    make, reason = BAD_STRIPE_FIELDS[case]
    event = make(customer)
    before = state()
    response = post(client, "stripe", event)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "failed"
    stored = WebhookEvent.objects.get(event_id=event["id"])
    assert reason in stored.error, stored.error
    after = state()
    assert after[0] == before[0] + 1 and after[1:] == before[1:]  # only the inbox row


def paddle_sub(customer, **changes):
    now = timezone.now().replace(microsecond=0)
    data = wp.paddle_subscription(
        sub_id="sub_01input",
        customer_id=customer.pk,
        price_id="pri_demo_growth",
        status="active",
        start=now,
        end=now + timedelta(days=30),
    )
    for key, value in changes.items():
        parent, _, child = key.partition("__")
        if child:
            data[parent][child] = value
        else:
            data[key] = value
    return wp.paddle_event("subscription.updated", data, occurred=now)


BAD_PADDLE_FIELDS = {
    "period ending in 9999": (
        lambda c: paddle_sub(c, current_billing_period__ends_at="9999-12-31T23:59:59Z"),
        "outside the accepted range",
    ),
    "period starting in 1970": (
        lambda c: paddle_sub(c, current_billing_period__starts_at="1970-01-01T00:00:00Z"),
        "outside the accepted range",
    ),
    "period without a zone": (
        lambda c: paddle_sub(c, current_billing_period__ends_at="2030-01-01T00:00:00"),
        "not an RFC 3339 time",
    ),
    "period a number": (lambda c: paddle_sub(c, current_billing_period__ends_at=5), "expected an RFC 3339"),
    "items an object": (lambda c: paddle_sub(c, items={"a": 1}), "data.items: expected a list"),
    "custom_data customer not a UUID": (
        lambda c: paddle_sub(c, custom_data={"customer_id": "x" * 5000}),
        "not a customer id",
    ),
}


@pytest.mark.parametrize("case", BAD_PADDLE_FIELDS, ids=list(BAD_PADDLE_FIELDS))
def test_signed_paddle_events_with_bad_fields_are_stored_failed_with_the_reason(client, case):
    plans_ensure()
    customer = CustomerFactory()
    make, reason = BAD_PADDLE_FIELDS[case]
    event = make(customer)
    before = state()
    response = post(client, "paddle", event)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "failed"
    assert reason in WebhookEvent.objects.get(event_id=event["event_id"]).error
    after = state()
    assert after[0] == before[0] + 1 and after[1:] == before[1:]


@pytest.mark.parametrize("created", [10**20, -(10**20), 253402300800 * 10, "yesterday"])
def test_an_absurd_event_time_is_stored_failed_and_stays_failed(client, created):
    plans_ensure()
    event = stripe_sub(CustomerFactory())
    event["created"] = created
    before = state()
    for _ in range(2):  # the redelivery applies nothing either
        response = post(client, "stripe", event)
        assert response.status_code == 200 and response.json()["status"] == "failed"
    stored = WebhookEvent.objects.get(event_id=event["id"])
    assert "created:" in stored.error and stored.occurred_at is None and stored.attempts == 2
    after = state()
    assert after[0] == before[0] + 1 and after[1:] == before[1:]


def test_characters_postgresql_cannot_store_are_replaced_and_the_event_stored_failed(client):
    plans_ensure()
    customer = CustomerFactory()
    event = stripe_sub(customer, status="act\u0000ive")
    event["data"]["object"]["customer"] = "cus_\ud800"
    event["data"]["object"]["description"] = "nul \u0000 here"
    before = state()
    for _ in range(2):
        response = post(client, "stripe", event)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "failed"
    stored = WebhookEvent.objects.get(event_id=event["id"])
    assert "PostgreSQL cannot store" in stored.error
    assert stored.payload["data"]["object"]["description"] == "nul \ufffd here"
    assert stored.payload["data"]["object"]["customer"] == "cus_\ufffd"
    after = state()
    assert after[0] == before[0] + 1 and after[1:] == before[1:]  # not applied, even redelivered


def _signed(processor, data, header):
    return {f"HTTP_{processor.upper()}_SIGNATURE": header}


@pytest.mark.parametrize(
    "header",
    [
        "t=" + "9" * 5000 + ",v1=" + "0" * 64,
        "t=123,v1=" + "a" * 5000,
        "t=١٢٣,v1=abc",  # Arabic-Indic digits: isdigit() is true, int() would take them
        "t=²,v1=abc",
    ],
    ids=["t of 5000 digits", "5000-character header", "non-ASCII digits", "superscript digit"],
)
def test_absurd_signature_headers_get_400_before_any_work(client, header):
    before = state()
    data = wp.body(stripe_sub(CustomerFactory()))
    response = client.post(
        "/webhooks/stripe/", data=data, content_type="application/json", **_signed("stripe", data, header)
    )
    assert response.status_code == 400 and response.json()["error"]
    assert state() == before


def test_a_non_ascii_signature_is_refused_not_a_500(client):
    data = wp.body(stripe_sub(CustomerFactory()))
    header = signature_header("stripe", data, STRIPE_SECRET).split(",v1=")[0] + ",v1=é" + "0" * 63
    before = state()
    response = client.post(
        "/webhooks/stripe/", data=data, content_type="application/json", **_signed("stripe", data, header)
    )
    assert response.status_code == 400 and response.json()["error"]
    assert state() == before


def _raw(client, processor, data):
    secret = STRIPE_SECRET if processor == "stripe" else PADDLE_SECRET
    return client.post(
        f"/webhooks/{processor}/",
        data=data,
        content_type="application/json",
        **_signed(processor, data, signature_header(processor, data, secret)),
    )


@pytest.mark.parametrize(
    "body,error",
    [
        (b'{"id":"evt_1","type":"x","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper"),
        (b'{"id":"evt_1","type":"x","data":{"a":' + b"[" * 40 + b"]" * 40 + b"}}", "nested deeper"),
        (b'{"id":"evt_1","type":"x","data":{"n":1e999}}', "not valid JSON"),
        (b'{"id":"evt_1","type":"x","data":{"n":NaN}}', "not valid JSON"),
        (b'{"id":"evt_1","type":"x","data":{"n":' + b"9" * 5000 + b"}}", "not valid JSON"),
        (b'{"id":"evt_\\u0000","type":"x","data":{}}', "invalid 'id'"),
        (b'{"id":"evt_1","type":"x\\ud800","data":{}}', "invalid 'type'"),
    ],
    ids=["100k levels", "40 levels", "1e999", "NaN", "5000-digit int", "NUL in id", "surrogate in type"],
)
def test_malformed_signed_bodies_get_400_and_write_nothing(client, body, error):
    before = state()
    response = _raw(client, "stripe", body)
    assert response.status_code == 400, response.content
    assert error in response.json()["error"]
    assert state() == before


def test_a_body_beyond_the_bound_is_refused_unread(client):
    from billing.services.webhooks import MAX_BODY_BYTES

    payload = stripe_sub(CustomerFactory())
    payload["data"]["object"]["description"] = "x" * MAX_BODY_BYTES
    before = state()
    response = _raw(client, "stripe", json.dumps(payload).encode())
    assert response.status_code == 413 and "larger than" in response.json()["error"]
    assert state() == before


def test_a_paddle_period_beyond_the_horizon_changes_nothing_even_for_a_known_subscription(client):
    """A signed webhook with a period ending in 9999 used to be applied (issue 9)."""
    plans_ensure()
    customer = CustomerFactory()
    ok = paddle_sub(customer)
    assert post(client, "paddle", ok).json()["status"] == "processed"
    before = state()
    far = paddle_sub(customer, current_billing_period__ends_at="9999-12-31T23:59:59Z")
    far["occurred_at"] = wp._iso(timezone.now() + timedelta(seconds=5))
    assert post(client, "paddle", far).json()["status"] == "failed"
    after = state()
    assert after[0] == before[0] + 1 and after[1:] == before[1:]


def test_a_period_past_the_horizon_at_the_databases_clock_is_stored_failed_not_a_500(client):
    """Python checks the horizon at its clock, the database at its transaction's start: a period ending
    between the two passed the first and was refused by the second (UP001) with a 500."""
    plans_ensure()
    customer = CustomerFactory()
    time.sleep(2)  # the test's transaction, and so the database's now(), began before this
    end = timezone.now().replace(microsecond=0) + PERIOD_HORIZON  # in range at Python's clock
    payload = stripe_sub(
        customer,
        current_period_start=int(customer.current_period_end.timestamp()),
        current_period_end=int(end.timestamp()),
    )
    response = post(client, "stripe", payload)
    assert response.status_code == 200 and response.json()["status"] == "failed"
    event = WebhookEvent.objects.get()
    assert "is outside the accepted range" in event.error and not event.retry_expected
    assert not customer.usage_periods.filter(period_end=end).exists()
