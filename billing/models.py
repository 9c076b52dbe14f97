"""The commercial side: the plan catalogue and each customer's subscription.

Fields and constraints only; the rules that use them live in billing/services/.
"""

import uuid

import pgtrigger
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from usage.models import Customer, GenRandomUUID


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
    ai_interactions_per_period = models.PositiveIntegerField(null=True, blank=True, help_text="Empty = unlimited.")
    minutes_per_period = models.PositiveIntegerField(null=True, blank=True, help_text="Empty = unlimited.")
    stripe_price_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    paddle_price_id = models.CharField(max_length=100, null=True, blank=True, unique=True)

    class Meta:
        db_table = "plans"
        ordering = ["price"]

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
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["trialing", "active", "past_due", "canceled"]),
                name="subscriptions_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(processor__in=["stripe", "paddle", "manual"]), name="subscriptions_processor_valid"
            ),
            models.CheckConstraint(
                condition=Q(current_period_end__gt=models.F("current_period_start")),
                name="subscriptions_period_ordered",
            ),
            # At most one live subscription per customer.
            models.UniqueConstraint(
                fields=["customer"], condition=~Q(status="canceled"), name="subscriptions_one_live_per_customer"
            ),
            models.UniqueConstraint(
                fields=["processor", "external_subscription_id"], name="subscriptions_processor_external_id"
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

    at = models.DateTimeField(db_default=Now(), editable=False)
    actor = models.CharField(max_length=200, help_text="A staff user, a command, or a processor's webhook.")
    action = models.CharField(max_length=32, choices=Action.choices)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    customer_id = models.UUIDField(null=True, blank=True, db_index=True)  # plain id: the log outlives customers
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")

    class Meta:
        db_table = "audit_log"
        ordering = ["-at", "-id"]
        triggers = [
            pgtrigger.Protect(name="audit_log_append_only", operation=pgtrigger.Update | pgtrigger.Delete),
        ]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.target_type} {self.target_id}"
