"""Webhook ingestion rate on one process with 10 % duplicates (SPEC §11).

Builds a stream of signed Stripe and Paddle events shaped like the processors' (subscription
updates, renewals, overage packs, event types we ignore), with 10 % of deliveries repeating an
earlier event, and posts them one after another through Django's full request stack (test client:
URL routing, the view, signature verification, JSON parsing, the inbox insert and the effect, each
delivery its own transaction). Then checks that every event was processed exactly once.

    .venv/bin/python bench/webhooks.py               # 3,000 deliveries
    .venv/bin/python bench/webhooks.py --deliveries 10000

Runs in its own database (billing_ops_bench). Progress on stderr; the Markdown table on stdout.
"""

import argparse
import random
import time
from datetime import timedelta

from common import fresh_bench_schema, log  # sets up Django on the benchmark database
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing.services.webhooks import signature_header
from demo import webhook_payloads as wp

SECRET = "whsec_bench"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    fresh_bench_schema()
    settings.STRIPE_WEBHOOK_SECRET = settings.PADDLE_WEBHOOK_SECRET = SECRET
    settings.ALLOWED_HOSTS = ["*"]

    from billing.models import AuditLog, CreditGrant, Subscription, WebhookEvent
    from demo.data import plans_ensure
    from usage.models import Customer

    plans = plans_ensure()
    now = timezone.now().replace(microsecond=0)
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    customers = Customer.objects.bulk_create(
        Customer(email=f"hook{i}@example.com", current_period_start=start, current_period_end=end)
        for i in range(args.customers)
    )
    subs = {}
    for i, customer in enumerate(customers):
        processor = "stripe" if i % 2 == 0 else "paddle"
        subs[customer.pk] = (processor, f"sub_bench_{i}")
        Subscription.objects.create(
            customer=customer,
            plan=plans["starter"],
            processor=processor,
            external_subscription_id=f"sub_bench_{i}",
            current_period_start=start,
            current_period_end=end,
            last_event_at=start,
        )

    log(f"building {args.deliveries:,} signed deliveries (10 % duplicates) ...")
    unique = int(args.deliveries * 0.9)
    events = []
    for n in range(unique):
        customer = rng.choice(customers)
        processor, sub_id = subs[customer.pk]
        at = start + timedelta(seconds=n + 1)
        kind = rng.random()
        price = rng.choice(["starter", "growth", "pro"])
        if processor == "stripe":
            if kind < 0.6:
                payload = wp.stripe_event(
                    "customer.subscription.updated",
                    wp.stripe_subscription(
                        sub_id=sub_id,
                        customer_id=customer.pk,
                        price_id=f"price_demo_{price}",
                        status="active",
                        start=start,
                        end=end,
                    ),
                    created=at,
                )
            elif kind < 0.8:
                payload = wp.stripe_event(
                    "checkout.session.completed",
                    wp.stripe_pack_checkout(customer_id=customer.pk, metric="minutes", quantity=100),
                    created=at,
                )
            else:
                payload = wp.stripe_event(
                    "charge.succeeded", {"id": f"ch_{n}", "object": "charge"}, created=at
                )
        else:
            if kind < 0.6:
                payload = wp.paddle_event(
                    "subscription.updated",
                    wp.paddle_subscription(
                        sub_id=sub_id,
                        customer_id=customer.pk,
                        price_id=f"pri_demo_{price}",
                        status="active",
                        start=start,
                        end=end,
                    ),
                    occurred=at,
                )
            elif kind < 0.8:
                payload = wp.paddle_event(
                    "transaction.completed",
                    wp.paddle_transaction(
                        sub_id=None,
                        origin="web",
                        custom_data={
                            "customer_id": str(customer.pk),
                            "metric": "ai_interaction",
                            "quantity": "500",
                        },
                    ),
                    occurred=at,
                )
            else:
                payload = wp.paddle_event("address.updated", {"id": f"add_{n}"}, occurred=at)
        events.append((processor, wp.body(payload)))
    deliveries = events + [rng.choice(events) for _ in range(args.deliveries - unique)]
    rng.shuffle(deliveries)

    client = Client()
    statuses = {}
    statements = [0]

    def count(execute, sql, params, many, context):  # every statement sent, not BEGIN/COMMIT
        statements[0] += 1
        return execute(sql, params, many, context)

    log(f"posting {len(deliveries):,} deliveries ...")
    started = time.perf_counter()
    with connection.execute_wrapper(count):
        for processor, data in deliveries:
            response = client.post(
                f"/webhooks/{processor}/",
                data=data,
                content_type="application/json",
                **{f"HTTP_{processor.upper()}_SIGNATURE": signature_header(processor, data, SECRET)},
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    elapsed = time.perf_counter() - started

    stored = WebhookEvent.objects.count()
    by_status = dict(
        WebhookEvent.objects.values_list("status").annotate(n=__import__("django").db.models.Count("id"))
    )
    grants = CreditGrant.objects.count()
    packs = sum(1 for _, d in events if b"checkout.session.completed" in d or b'"metric"' in d)
    print(
        f"Webhook ingestion, one process, {len(deliveries):,} deliveries of which "
        f"{len(deliveries) - unique:,} are redeliveries ({(len(deliveries) - unique) / len(deliveries):.0%})\n"
    )
    print(
        "| deliveries/s | statements per delivery | HTTP answers | inbox rows (unique events) | by status "
        "| credit grants (packs) | audit rows |"
    )
    print("|---:|---:|---|---:|---|---:|---:|")
    print(
        f"| {len(deliveries) / elapsed:,.0f} | {statements[0] / len(deliveries):.1f} | {statuses} | "
        f"{stored:,} ({unique:,}) | {by_status} | {grants:,} ({packs:,}) | {AuditLog.objects.count():,} |"
    )
    if stored != unique or grants != packs:
        raise SystemExit("an event was processed more than once, or not at all")


if __name__ == "__main__":
    main()
