"""The commercial side: the plan catalogue and each customer's subscription.

Fields and constraints only; the rules that use them live in billing/services/.
"""

import uuid

import pgtrigger
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from billing import triggers
from usage import numbers
from usage.metrics import metric_label
from usage.models import (
    CounterFieldsMixin,
    Customer,
    GenRandomUUID,
    ReconciliationRun,
    UsageEvent,
    UsageTracking,
)


class Plan(models.Model):
    class Code(models.TextChoices):
        FREE = "free"
        STARTER = "starter"
        GROWTH = "growth"
        PRO = "pro"

    code = models.CharField(max_length=32, unique=True, choices=Code.choices)
    name = models.CharField(max_length=100)
    price = models.PositiveIntegerField(help_text="Monthly price in minor units (cents).")
    max_active_projects = models.PositiveIntegerField(null=True, blank=True, help_text="Empty = unlimited.")
    ai_interactions_per_period = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty = unlimited."
    )
    minutes_per_period = models.PositiveIntegerField(null=True, blank=True, help_text="Empty = unlimited.")
    stripe_price_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    paddle_price_id = models.CharField(max_length=100, null=True, blank=True, unique=True)

    class Meta:
        db_table = "plans"
        ordering = ["price"]
        # An edited plan (an allowance, a code) makes every summarized month be computed again.
        triggers = triggers.plan_triggers()

    def __str__(self):
        return self.name


class Subscription(models.Model):
    class Status(models.TextChoices):
        TRIALING = "trialing"
        ACTIVE = "active"
        PAST_DUE = "past_due"
        CANCELED = "canceled"

    class Processor(models.TextChoices):
        STRIPE = "stripe"
        PADDLE = "paddle"
        MANUAL = "manual"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=GenRandomUUID(), editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    processor = models.CharField(max_length=16, choices=Processor.choices, default=Processor.MANUAL)
    external_subscription_id = models.CharField(max_length=200, null=True, blank=True)
    external_customer_id = models.CharField(max_length=200, null=True, blank=True)
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    last_event_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        db_table = "subscriptions"
        ordering = ["-created_at"]
        # A change of the live plan keeps each usage period on the plan in effect for it (plan_id).
        triggers = triggers.subscription_triggers()
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["trialing", "active", "past_due", "canceled"]),
                name="subscriptions_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(processor__in=["stripe", "paddle", "manual"]),
                name="subscriptions_processor_valid",
            ),
            models.CheckConstraint(
                condition=Q(current_period_end__gt=models.F("current_period_start")),
                name="subscriptions_period_ordered",
            ),
            # At most one live subscription per customer.
            models.UniqueConstraint(
                fields=["customer"],
                condition=~Q(status="canceled"),
                name="subscriptions_one_live_per_customer",
            ),
            models.UniqueConstraint(
                fields=["processor", "external_subscription_id"], name="subscriptions_processor_external_id"
            ),
        ]
        indexes = [
            # The admin's status filter in its customer order (a rare status: past due, 4 %).
            models.Index(fields=["status", "-customer_id"], name="subscriptions_status_order"),
            # The customer list's processor, status and plan filters find their candidates here (one
            # index-only range), then check each is the live subscription: along the email order a rare
            # pair (Paddle, past due: 0.5 %) walked 200,000 customers (bench/admin.py).
            models.Index(
                fields=["processor", "status", "customer_id"],
                include=["id"],
                name="subscriptions_live_filter",
            ),
            # Support searches customers by the processor's customer or subscription id (SPEC §7
            # Support); the unique key above leads with processor.
            models.Index(
                fields=["external_customer_id"],
                condition=Q(external_customer_id__isnull=False),
                name="subscriptions_ext_customer",
            ),
            models.Index(
                fields=["external_subscription_id"],
                condition=Q(external_subscription_id__isnull=False),
                name="subscriptions_external_sub",
            ),
        ]

    def __str__(self):
        return f"{self.customer} on {self.plan}"


class AuditLog(models.Model):
    """Every manual or automated change to billing state (SPEC §5). Append-only, in the database itself."""

    class Action(models.TextChoices):
        RECOUNT = "recount"
        PLAN_CHANGE = "plan_change"
        CREDIT_GRANT = "credit_grant"
        PERIOD_ROLLOVER = "period_rollover"
        WEBHOOK_EFFECT = "webhook_effect"
        PROJECT_LIMIT_OVERRIDE = "project_limit_override"
        OPENING_BALANCE = "opening_balance"  # adopt: a counter with no source rows, as an event

    at = models.DateTimeField(db_default=Now(), editable=False)
    actor = models.CharField(max_length=200, help_text="A staff user, a command, or a processor's webhook.")
    action = models.CharField(max_length=32, choices=Action.choices)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    customer_id = models.UUIDField(
        null=True, blank=True, db_index=True
    )  # plain id: the log outlives customers
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")

    class Meta:
        db_table = "audit_log"
        ordering = ["-at", "-id"]
        # The admin's action filter in its order (newest first by id): a rare action walked the log.
        indexes = [models.Index(fields=["action", "-id"], name="audit_log_action_order")]
        triggers = [
            pgtrigger.Protect(name="audit_log_append_only", operation=pgtrigger.Update | pgtrigger.Delete),
            # TRUNCATE fires no row trigger: a statement trigger refuses it, for every role (the owner's too).
            pgtrigger.Trigger(
                name="audit_log_no_truncate",
                level=pgtrigger.Statement,
                when=pgtrigger.Before,
                operation=pgtrigger.Truncate,
                func="RAISE EXCEPTION 'audit_log is append-only: TRUNCATE refused' USING ERRCODE = 'insufficient_privilege';",
            ),
        ]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.target_type} {self.target_id}"


class CreditGrant(CounterFieldsMixin, models.Model):
    """Overage credit: purchased (a paid pack, from a webhook) or goodwill (support, with a reason).

    ``remaining`` = granted − what usage drew from it (I4). Only the triggers on credit_draws move it;
    the database sets it to ``granted`` on insert and refuses client writes (reconciliation aside).
    """

    class Source(models.TextChoices):
        PURCHASE = "purchase"
        GOODWILL = "goodwill"

    counter_fields = ("remaining", "granted")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=GenRandomUUID(), editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="credit_grants")
    metric = models.CharField(max_length=32, choices=UsageEvent.Metric.choices)
    granted = models.DecimalField(max_digits=18, decimal_places=3)
    remaining = models.DecimalField(max_digits=18, decimal_places=3, default=0, db_default=0, editable=False)
    source = models.CharField(max_length=16, choices=Source.choices)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty = never expires.")
    created_by = models.CharField(max_length=200, help_text="A staff user, or the processor's webhook.")
    reason = models.TextField(blank=True, default="")
    external_ref = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        unique=True,
        help_text="The processor's payment or transaction id.",
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "credit_grants"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(granted__gt=0), name="credit_grants_granted_positive"),
            models.CheckConstraint(
                condition=Q(metric__in=["ai_interaction", "minutes"]), name="credit_grants_metric_valid"
            ),
            models.CheckConstraint(
                condition=Q(source__in=["purchase", "goodwill"]), name="credit_grants_source_valid"
            ),
            models.CheckConstraint(
                condition=~Q(source="goodwill") | ~Q(reason=""), name="credit_grants_goodwill_has_reason"
            ),
        ]
        indexes = [
            # Consume: a customer's live grants of one metric, earliest expiry first.
            models.Index(
                fields=["customer", "metric", "expires_at", "created_at"],
                condition=Q(remaining__gt=0),
                name="credit_grants_live",
            ),
        ]
        triggers = triggers.credit_grant_triggers()

    def __str__(self):
        return f"{numbers.number(self.granted)} {metric_label(self.metric)} ({self.source})"


class CreditDraw(models.Model):
    """The ledger of what usage drew from each grant; credit_grants.remaining is derived from it."""

    class Kind(models.TextChoices):
        USAGE = "usage"  # consume drew it for usage beyond the allowance
        REFUND = "refund"  # the pack was refunded: what was left is taken back
        CHARGEBACK = "chargeback"  # the pack's payment was disputed: what was left is taken back

    TAKE_BACK_KINDS = (Kind.REFUND, Kind.CHARGEBACK)

    grant = models.ForeignKey(CreditGrant, on_delete=models.CASCADE, related_name="draws")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    usage_event_id = models.UUIDField(null=True, blank=True, help_text="The usage event that drew it.")
    quantity = models.DecimalField(max_digits=18, decimal_places=3)
    kind = models.CharField(
        max_length=16,
        choices=Kind.choices,
        default=Kind.USAGE,
        db_default=Kind.USAGE,
        help_text="What took the credit: usage, or a refund or chargeback of the pack (finance sums these).",
    )
    drawn_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "credit_draws"
        ordering = ["-drawn_at"]
        constraints = [
            models.CheckConstraint(condition=~Q(quantity=0), name="credit_draws_quantity_nonzero"),
            models.CheckConstraint(
                condition=Q(kind__in=["usage", "refund", "chargeback"]), name="credit_draws_kind_valid"
            ),
        ]
        indexes = [models.Index(fields=["grant"], include=["quantity"], name="credit_draws_by_grant")]
        triggers = triggers.credit_draw_triggers()


class ConsumeRequest(models.Model):
    """The first answer to a consume call with an idempotency key: a retry gets it back, consuming nothing.

    Keyed by (customer, key) alone: one index to maintain on the consume path, not three.
    """

    pk = models.CompositePrimaryKey("customer_id", "idempotency_key")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+", db_index=False)
    idempotency_key = models.CharField(max_length=200)
    metric = models.CharField(max_length=32)
    amount = models.DecimalField(max_digits=18, decimal_places=3)
    allowed = models.BooleanField()
    new_usage = models.DecimalField(max_digits=18, decimal_places=3)
    effective_limit = models.DecimalField(max_digits=18, decimal_places=3, null=True)
    plan = models.CharField(max_length=32)
    subscription_status = models.CharField(max_length=16)
    credits_remaining = models.DecimalField(max_digits=18, decimal_places=3)
    message = models.TextField()
    usage_event_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "consume_requests"


class WebhookEvent(models.Model):
    """The inbox: one row per (processor, event id), committed with the event's effect."""

    class Processor(models.TextChoices):
        STRIPE = "stripe"
        PADDLE = "paddle"

    class Status(models.TextChoices):
        PROCESSED = "processed"
        IGNORED = "ignored"
        FAILED = "failed"

    processor = models.CharField(max_length=16, choices=Processor.choices)
    event_id = models.CharField(max_length=200)
    event_type = models.CharField(max_length=100)
    occurred_at = models.DateTimeField(
        null=True, blank=True, help_text="When the processor created the event."
    )
    received_at = models.DateTimeField(db_default=Now(), editable=False)
    processed_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    customer_id = models.UUIDField(null=True, blank=True, db_index=True)
    outcome = models.TextField(
        blank=True, default="", help_text="What the event changed, or why it changed nothing."
    )
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=1)
    retry_expected = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Failed because something it needs is not there yet: answered non-2xx, "
        "so the processor delivers it again.",
    )
    api_version = models.CharField(
        max_length=40,
        blank=True,
        default="",
        db_default="",
        help_text="The processor's API version of the payload.",
    )
    payload = models.JSONField()

    class Meta:
        db_table = "webhook_events"
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["processor", "event_id"], name="webhook_events_processor_event_id"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["processed", "ignored", "failed"]), name="webhook_events_status_valid"
            ),
        ]
        indexes = [
            models.Index(
                fields=["status", "received_at"], condition=Q(status="failed"), name="webhook_events_failed"
            ),
            # The inbox filtered by status in its order (newest first, by id): failed events (0.5 %)
            # walked the primary key back through 200,000 others for a page's count.
            models.Index(fields=["status", "-id"], name="webhook_events_status_order"),
        ]
        permissions = [("replay_webhookevent", "Can replay a failed webhook event")]

    def __str__(self):
        return f"{self.processor} {self.event_type} {self.event_id}"


class RunFinding(models.Model):
    """A customer's finding (over a limit, a stale period, a failed webhook) as a report found it.

    Kept with the report's run, as its drifted counters are (reconciliation_run_rows): the customer
    list's "over a limit" filter reads the last full report's instead of computing every customer's
    usage from its events on each page load (seconds at a million customers; SPEC §7 "Fast at a
    million"). The row's OVER flag stays live, from the truth.
    """

    # No index of its own: run_findings_by_check starts with run_id.
    run = models.ForeignKey(
        ReconciliationRun, on_delete=models.CASCADE, related_name="findings", db_index=False
    )
    check_name = models.CharField("check", max_length=32, db_column="check")
    customer_id = models.UUIDField()  # a plain id, as the run's rows: history outlives the customer
    detail = models.TextField()

    class Meta:
        db_table = "reconciliation_run_findings"
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "check_name", "customer_id"], name="run_findings_by_check")]

    def __str__(self):
        return f"{self.check_name} {self.customer_id}"


def _figure():  # a sum of counters (numeric(18,3)): the scale of the live figure
    return models.DecimalField(max_digits=30, decimal_places=3)


class UsageMonth(models.Model):
    """A closed month (every usage period that started in it has ended) whose per-plan figures are kept
    in UsageMonthPlan (SPEC §7 Finance, §11): the month page and the trends read them instead of a
    million periods. Written by billing.services.usage_months (cron: roll_usage_periods; and a
    reconciliation), never by the finance pages. A month noted in usage_months_changed since is
    computed from the periods again until it is summarized anew."""

    period_month = models.CharField(max_length=7, primary_key=True)
    built_at = models.DateTimeField()

    class Meta:
        db_table = "billing_usage_months"

    def __str__(self):
        return self.period_month


class UsageMonthPlan(models.Model):
    """One plan's figures of a summarized month: what the month page shows for it (the rows of
    usage_report --month for the periods of that plan, summed: billing.finance.selectors)."""

    month = models.ForeignKey(
        UsageMonth, on_delete=models.CASCADE, db_column="period_month", related_name="plans"
    )
    plan = models.CharField(max_length=32, null=True)  # the plan's code; None: no plan at all
    periods = models.BigIntegerField()
    active_projects = models.BigIntegerField()
    ai_used = _figure()
    ai_allowance = models.DecimalField(max_digits=30, decimal_places=0, null=True)  # None: unlimited
    ai_overage = _figure()
    ai_from_credit = _figure()
    minutes_used = _figure()
    minutes_allowance = models.DecimalField(max_digits=30, decimal_places=0, null=True)
    minutes_overage = _figure()
    minutes_from_credit = _figure()

    class Meta:
        db_table = "billing_usage_month_plans"
        constraints = [
            models.UniqueConstraint(
                fields=["month", "plan"], name="billing_usage_month_plans_one", nulls_distinct=False
            )
        ]


class UsagePeriodPlan(UsageTracking):
    """The product's usage periods as billing sees them: a proxy of usage's UsageTracking (no table of
    its own) that carries billing's triggers on usage_tracking (billing/triggers.py
    usage_period_triggers): each period stamped with its plan as it opens (usage_tracking.plan_id,
    billing 0018/0021). Usage never imports billing (SPEC §3), so the stamp is declared here."""

    class Meta:
        proxy = True
        default_permissions = ()  # no page of its own: the usage periods' admin is usage's model
        triggers = triggers.usage_period_triggers()
