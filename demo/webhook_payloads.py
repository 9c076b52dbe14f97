"""Events shaped like the processors' documented webhook payloads, for the demo, tests and benchmarks.

Stripe: an ``event`` object (id, type, created, data.object); subscriptions carry our customer id in
``metadata.customer_id``. Paddle Billing: event_id, event_type, occurred_at, data; our customer id
travels in ``custom_data.customer_id``. Only the fields billing-ops reads are filled in, plus enough of
the rest to look like the real thing.
"""

import json
import secrets
from datetime import UTC, datetime


def _sid(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _unix(at: datetime) -> int:
    return int(at.timestamp())


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def stripe_event(event_type: str, obj: dict, *, created: datetime, event_id: str | None = None) -> dict:
    return {
        "id": event_id or _sid("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": _unix(created),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": _sid("req"), "idempotency_key": None},
        "type": event_type,
    }


def stripe_subscription(
    *,
    sub_id: str,
    customer_id,
    price_id: str,
    status: str,
    start: datetime,
    end: datetime,
    stripe_customer: str = "cus_demo",
) -> dict:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": stripe_customer,
        "status": status,
        "cancel_at_period_end": False,
        "current_period_start": _unix(start),
        "current_period_end": _unix(end),
        "items": {
            "object": "list",
            "data": [
                {
                    "id": _sid("si"),
                    "object": "subscription_item",
                    "quantity": 1,
                    "price": {
                        "id": price_id,
                        "object": "price",
                        "currency": "usd",
                        "recurring": {"interval": "month"},
                    },
                }
            ],
        },
        "metadata": {"customer_id": str(customer_id)},
        "livemode": False,
    }


def stripe_invoice_paid(
    *,
    sub_id: str,
    start: datetime,
    end: datetime,
    price_id: str,
    billing_reason: str = "subscription_cycle",
    amount: int = 2900,
) -> dict:
    return {
        "id": _sid("in"),
        "object": "invoice",
        "billing_reason": billing_reason,
        "customer": "cus_demo",
        "subscription": sub_id,
        "status": "paid",
        "paid": True,
        "amount_paid": amount,
        "currency": "usd",
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": _sid("il"),
                    "object": "line_item",
                    "amount": amount,
                    "period": {"start": _unix(start), "end": _unix(end)},
                    "price": {"id": price_id, "object": "price"},
                }
            ],
        },
    }


def stripe_pack_checkout(*, customer_id, metric: str, quantity, amount: int = 1000) -> dict:
    return {
        "id": _sid("cs_test"),
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "status": "complete",
        "payment_intent": _sid("pi"),
        "amount_total": amount,
        "currency": "usd",
        "metadata": {"customer_id": str(customer_id), "metric": metric, "quantity": str(quantity)},
    }


def paddle_event(event_type: str, data: dict, *, occurred: datetime, event_id: str | None = None) -> dict:
    return {
        "event_id": event_id or _sid("evt"),
        "event_type": event_type,
        "occurred_at": _iso(occurred),
        "notification_id": _sid("ntf"),
        "data": data,
    }


def paddle_subscription(
    *, sub_id: str, customer_id, price_id: str, status: str, start: datetime, end: datetime
) -> dict:
    return {
        "id": sub_id,
        "status": status,
        "customer_id": "ctm_demo",
        "currency_code": "USD",
        "billing_cycle": {"interval": "month", "frequency": 1},
        "current_billing_period": {"starts_at": _iso(start), "ends_at": _iso(end)},
        "items": [{"status": "active", "quantity": 1, "price": {"id": price_id, "product_id": "pro_demo"}}],
        "custom_data": {"customer_id": str(customer_id)},
    }


def paddle_transaction(
    *,
    sub_id: str | None,
    origin: str,
    start: datetime | None = None,
    end: datetime | None = None,
    custom_data: dict | None = None,
) -> dict:
    return {
        "id": _sid("txn"),
        "status": "completed",
        "customer_id": "ctm_demo",
        "subscription_id": sub_id,
        "origin": origin,
        "currency_code": "USD",
        "billing_period": {"starts_at": _iso(start), "ends_at": _iso(end)} if start else None,
        "items": [{"quantity": 1, "price": {"id": "pri_demo_pack"}}],
        "custom_data": custom_data,
    }


def body(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
