"""Demo data (SPEC §9): a realistic population plus the planted cases a newcomer should see first.

The population is written the way the product writes (bulk statements, triggers on), so its counters
are right. The S1 cases are written as history from before tracking existed: with the counter
triggers ignored for this session only, so they show drift that the integrity tools must find.
"""

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pgtrigger
from django.db import transaction
from django.utils import timezone

from billing.models import Plan, Subscription
from usage.models import Customer, Preset, PresetUsage, Project, UsageEvent, UsageTracking
from usage.services.counters import counter_writes_allowed

DEMO_DOMAIN = "demo.billing-ops.test"

PLANS = [
    # code, name, price (cents), projects, AI interactions, minutes (None = unlimited)
    ("free", "Free", 0, 1, 50, 60),
    ("starter", "Starter", 1900, 3, 500, 600),
    ("growth", "Growth", 4900, 10, 5000, 3000),
    ("pro", "Pro", 19900, None, 50000, None),
]
PLAN_WEIGHTS = {"free": 50, "starter": 25, "growth": 15, "pro": 10}

# The planted S1 cases: email -> what support should see.
S1_SIX_PROJECTS = f"s1-six-projects@{DEMO_DOMAIN}"
S1_PHANTOM_THREE = f"s1-phantom-three@{DEMO_DOMAIN}"
S1_MISSING_ROW = f"s1-missing-row@{DEMO_DOMAIN}"


@dataclass
class DemoResult:
    customers: int
    projects: int
    events: int
    preset_uses: int
    skipped: bool = False


def _month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _add_months(moment: datetime, months: int) -> datetime:
    year, month = divmod(moment.month - 1 + months, 12)
    return moment.replace(year=moment.year + year, month=month + 1)


def plans_ensure() -> dict[str, Plan]:
    plans = {}
    for code, name, price, projects, ai, minutes in PLANS:
        plans[code], _ = Plan.objects.update_or_create(
            code=code,
            defaults=dict(
                name=name,
                price=price,
                max_active_projects=projects,
                ai_interactions_per_period=ai,
                minutes_per_period=minutes,
                stripe_price_id=None if code == "free" else f"price_demo_{code}",
                paddle_price_id=None if code == "free" else f"pri_demo_{code}",
            ),
        )
    return plans


@transaction.atomic
def demo_data_load(
    *, customers: int = 200, seed: int = 7, now: datetime | None = None, progress=None
) -> DemoResult:
    if customers < 3:
        raise ValueError("--customers must be at least 3")
    now = now or timezone.now()
    rng = random.Random(seed)
    plans = plans_ensure()
    month_start = _month_start(now.astimezone(UTC))

    # Customers, each with a period: calendar months, or the processor's anchor day.
    plan_codes = rng.choices(list(PLAN_WEIGHTS), weights=list(PLAN_WEIGHTS.values()), k=customers)
    rows, subs = [], []
    for i, code in enumerate(plan_codes):
        processor = "manual" if code == "free" else rng.choice(["stripe", "stripe", "paddle"])
        if processor == "manual":
            start = month_start
        else:
            anchor = month_start.replace(day=rng.randint(1, 28))
            start = anchor if anchor <= now else _add_months(anchor, -1)
        customer = Customer(
            email=f"{_slug(rng)}-{i}@{DEMO_DOMAIN}",
            name=_company(rng),
            current_period_start=start,
            current_period_end=_add_months(start, 1),
        )
        rows.append(customer)
        subs.append(
            Subscription(
                customer=customer,
                plan=plans[code],
                status=rng.choices(["active", "trialing", "past_due"], weights=[90, 6, 4])[0],
                processor=processor,
                external_subscription_id=None
                if processor == "manual"
                else f"{'sub' if processor == 'stripe' else 'sub_p'}_demo_{i:06d}",
                external_customer_id=None if processor == "manual" else f"cus_demo_{i:06d}",
                current_period_start=customer.current_period_start,
                current_period_end=customer.current_period_end,
            )
        )
    Customer.objects.bulk_create(rows, batch_size=2000)
    Subscription.objects.bulk_create(subs, batch_size=2000)
    _tick(progress, "customers", len(rows))

    # Projects, mostly within the plan's limit; a few customers sit over it.
    projects = []
    for customer, code in zip(rows, plan_codes, strict=True):
        limit = plans[code].max_active_projects or 25
        for j in range(rng.randint(0, limit + (1 if rng.random() < 0.05 else 0))):
            projects.append(Project(customer=customer, name=f"{_project_name(rng)} {j + 1}"))
        for _ in range(rng.randint(0, 2)):
            projects.append(Project(customer=customer, name=f"Old {_project_name(rng)}", status="archived"))
    Project.objects.bulk_create(projects, batch_size=5000)
    _tick(progress, "projects", len(projects))

    # Presets and their uses over the last 90 days.
    presets = [
        Preset(customer=c, name=rng.choice(PRESET_NAMES)) for c in rows for _ in range(rng.randint(0, 3))
    ]
    Preset.objects.bulk_create(presets, batch_size=5000)
    uses = [
        PresetUsage(
            preset=p, customer=p.customer, used_at=now - timedelta(minutes=rng.randint(1, 90 * 24 * 60))
        )
        for p in presets
        for _ in range(rng.randint(0, 25))
    ]
    PresetUsage.objects.bulk_create(uses, batch_size=5000)
    _tick(progress, "preset uses", len(uses))

    # Metered usage over the current and two previous periods, within ~90 % of the allowance.
    events = []
    for customer, code in zip(rows, plan_codes, strict=True):
        plan = plans[code]
        for back in range(3):
            start = _add_months(customer.current_period_start, -back)
            end = min(_add_months(start, 1), now)
            span = max((end - start).total_seconds(), 60)
            for metric, allowance in (
                ("ai_interaction", plan.ai_interactions_per_period),
                ("minutes", plan.minutes_per_period),
            ):
                budget = (allowance or 2000) * rng.uniform(0.05, 0.9)
                for k in range(rng.randint(1, 8)):
                    events.append(
                        UsageEvent(
                            customer=customer,
                            metric=metric,
                            quantity=Decimal(max(1, round(budget / 8))),
                            occurred_at=start + timedelta(seconds=rng.uniform(0, span - 1)),
                            idempotency_key=f"demo-{customer.email}-{metric}-{back}-{k}",
                        )
                    )
    UsageEvent.objects.bulk_create(events, batch_size=5000)
    _tick(progress, "usage events", len(events))

    s1_plant(free_plan=plans["free"])
    planted = scenarios_plant(plans=plans)
    return DemoResult(len(rows) + 3 + planted, len(projects), len(events), len(uses))


S1_NAMES = {
    "six": "Historic Six Ltd (S1: 0 tracked, 6 active)",
    "phantom": "Phantom Three GmbH (S1: 3 tracked, none active)",
    "missing": "No Row Yet Inc (S1: projects, no period row)",
}


@transaction.atomic
def s1_plant(*, free_plan: Plan, emails: dict | None = None) -> dict:
    """S1: counters that history got wrong (triggers off), for the integrity tools to find.

    ``six``: 6 active projects, counter 0. ``phantom``: counter 3, no active project. ``missing``:
    2 active projects and no current-period row at all. Returns the three customers by those keys.
    """
    emails = emails or {"six": S1_SIX_PROJECTS, "phantom": S1_PHANTOM_THREE, "missing": S1_MISSING_ROW}
    made = {}
    for key, email in emails.items():
        c = Customer.objects.create(email=email, name=S1_NAMES[key])
        c.refresh_from_db()
        Subscription.objects.create(
            customer=c,
            plan=free_plan,
            current_period_start=c.current_period_start,
            current_period_end=c.current_period_end,
        )
        made[key] = c

    with pgtrigger.ignore("usage.Project:projects_on_insert"):
        Project.objects.bulk_create(
            [Project(customer=made["six"], name=f"Imported project {i}") for i in range(1, 7)]
            + [Project(customer=made["phantom"], name=f"Retired {i}", status="archived") for i in range(1, 3)]
            + [Project(customer=made["missing"], name=f"Legacy {i}") for i in range(1, 3)]
        )

    with counter_writes_allowed():
        for key, count in (("six", 0), ("phantom", 3)):
            c = made[key]
            UsageTracking.objects.create(
                customer=c,
                period_start=c.current_period_start,
                period_end=c.current_period_end,
                month=c.current_period_start.strftime("%Y-%m"),
                active_projects_count=count,
            )
    return made


SCENARIOS = {
    "s5": (f"s5-overage-credit@{DEMO_DOMAIN}", "Overage Minutes Co (S5: 620 of 600 minutes, 30 credit left)"),
    "s6": (f"s6-stripe-renewal@{DEMO_DOMAIN}", "Renewed Via Stripe (S6: webhook history, a failed event)"),
    "s7": (f"s7-downgrade-blocked@{DEMO_DOMAIN}", "Five Projects Ltd (S7: Growth to Starter blocked)"),
    "s8": (f"s8-at-project-limit@{DEMO_DOMAIN}", "Three Of Three Inc (S8: at the Starter project limit)"),
    "goodwill": (f"goodwill-credit@{DEMO_DOMAIN}", "Outage Refund SA (goodwill credit from support)"),
}


def scenarios_plant(*, plans: dict) -> int:
    """The billing scenarios (SPEC §9 S5-S8), written through the same services the product uses."""
    from billing.services.consume import consume
    from billing.services.credits import credit_grant
    from billing.services.webhooks import envelope_parse, webhook_ingest
    from demo import webhook_payloads as wp

    made = {}
    for key, (email, name) in SCENARIOS.items():
        made[key] = Customer.objects.create(email=email, name=name)
        made[key].refresh_from_db()
    for key, code, processor in (
        ("s5", "starter", "manual"),
        ("s7", "growth", "manual"),
        ("s8", "starter", "manual"),
        ("goodwill", "growth", "manual"),
    ):
        c = made[key]
        Subscription.objects.create(
            customer=c,
            plan=plans[code],
            processor=processor,
            current_period_start=c.current_period_start,
            current_period_end=c.current_period_end,
        )

    # S5: 50 purchased credit minutes; 620 used of Starter's 600: 20 drawn, 30 left.
    s5 = made["s5"]
    credit_grant(
        customer=s5,
        metric="minutes",
        quantity=50,
        source="purchase",
        actor="demo_data",
        reason="overage pack bought at checkout",
        external_ref="demo:s5-pack",
    )
    for i, amount in enumerate((300, 300, 20)):
        consume(customer_id=s5.pk, metric="minutes", amount=amount, idempotency_key=f"demo-s5-{i}")

    # S7 and S8: 5 active projects on Growth; 3 of 3 on Starter.
    Project.objects.bulk_create(
        [Project(customer=made["s7"], name=f"Channel {i}") for i in range(1, 6)]
        + [Project(customer=made["s8"], name=f"Show {i}") for i in range(1, 4)]
    )

    credit_grant(
        customer=made["goodwill"],
        metric="ai_interaction",
        quantity=250,
        source="goodwill",
        actor="support",
        reason="transcription outage on the 3rd: 2 days of AI features lost",
    )

    # S6: a Stripe subscription, its renewal delivered three times (processed once), an update
    # older than the last applied one (ignored), and an update for a price no plan carries (failed).
    s6 = made["s6"]
    start = s6.current_period_start - timedelta(days=31)
    end = s6.current_period_start
    sub = dict(sub_id="sub_demo_s6", customer_id=s6.pk, status="active")
    deliveries = [
        (
            "stripe",
            wp.stripe_event(
                "customer.subscription.created",
                wp.stripe_subscription(**sub, price_id="price_demo_growth", start=start, end=end),
                created=start,
            ),
        ),
    ]
    renewal = wp.stripe_event(
        "invoice.paid",
        wp.stripe_invoice_paid(
            sub_id="sub_demo_s6", start=end, end=s6.current_period_end, price_id="price_demo_growth"
        ),
        created=end,
    )
    deliveries += [("stripe", renewal)] * 3
    deliveries.append(
        (
            "stripe",
            wp.stripe_event(
                "customer.subscription.updated",
                wp.stripe_subscription(**sub, price_id="price_demo_starter", start=start, end=end),
                created=start - timedelta(days=2),
            ),
        )
    )
    deliveries.append(
        (
            "stripe",
            wp.stripe_event(
                "customer.subscription.updated",
                wp.stripe_subscription(
                    **sub, price_id="price_enterprise_2027", start=end, end=s6.current_period_end
                ),
                created=end + timedelta(hours=1),
            ),
        )
    )
    # The customer was on calendar months before subscribing: make the period end where Stripe's began.
    Customer.objects.filter(pk=s6.pk).update(current_period_start=start, current_period_end=end)
    for processor, payload in deliveries:
        webhook_ingest(envelope_parse(processor, wp.body(payload)))
    return len(made)


_STEPS = ("customers", "projects", "preset uses", "usage events")


def _tick(progress, what, n):
    if progress:
        progress(_STEPS.index(what) + 1, len(_STEPS))


def _slug(rng):
    return f"{rng.choice(FIRST)}.{rng.choice(LAST)}".lower()


def _company(rng):
    return f"{rng.choice(LAST)} {rng.choice(['Labs', 'Studio', 'Media', 'Health', 'Legal', 'Systems', 'Co'])}"


def _project_name(rng):
    return rng.choice(
        ["Podcast", "Interviews", "Webinar", "Support calls", "Lectures", "Sales demos", "Research"]
    )


FIRST = [
    "ada",
    "grace",
    "alan",
    "edsger",
    "barbara",
    "ken",
    "linus",
    "margaret",
    "donald",
    "frances",
    "john",
    "radia",
]
LAST = [
    "lovelace",
    "hopper",
    "turing",
    "dijkstra",
    "liskov",
    "thompson",
    "torvalds",
    "hamilton",
    "knuth",
    "allen",
    "backus",
    "perlman",
]
PRESET_NAMES = ["Meeting notes", "Show notes", "Summary", "Action items", "Transcript cleanup", "Chapters"]
