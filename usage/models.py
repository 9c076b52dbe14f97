"""The product's tables and the counters derived from them.

Counters (``usage_tracking.*_count``, ``minutes_used``, ``presets.usage_count``/``last_used_at``) are
written only by the PostgreSQL triggers declared in ``Meta.triggers`` (SQL in ``usage/sql`` and
``usage/triggers.py``) or by reconciliation under lock. The models carry fields and constraints only.
"""

import uuid

from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import DateTimeRangeField, RangeOperators
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import Func, Q
from django.db.models.functions import Lower, Now, Upper
from django.utils import timezone

from usage import metrics as catalogue
from usage import triggers
from usage.names import db_column, table, uuid_id


class GenRandomUUID(Func):
    """``gen_random_uuid()``: the database fills ids for rows the product writes in raw SQL."""

    function = "gen_random_uuid"
    output_field = models.UUIDField()


class MonthStartUTC(Func):
    template = "(date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
    output_field = models.DateTimeField()


class NextMonthStartUTC(Func):
    template = "((date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC')"
    output_field = models.DateTimeField()


class TstzRange(Func):
    function = "tstzrange"
    output_field = DateTimeRangeField()


class CounterFieldsMixin:
    """ORM saves never write the derived counters: the triggers own them (SPEC §4, I5).

    A plain ``save()`` of an edited name would otherwise write back the counter value loaded earlier,
    overwriting every increment made since; the database refuses that write, so leave them out.
    """

    counter_fields: tuple[str, ...] = ()

    def save(self, *args, **kwargs):
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name not in self.counter_fields
            ]
        super().save(*args, **kwargs)


class Customer(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=GenRandomUUID(), editable=False)
    email = models.EmailField(max_length=254, db_column=db_column("customers", "email"))
    name = models.CharField(
        max_length=200, blank=True, default="", db_default="", db_column=db_column("customers", "name")
    )
    current_period_start = models.DateTimeField(
        db_default=MonthStartUTC(), db_column=db_column("customers", "current_period_start")
    )
    current_period_end = models.DateTimeField(
        db_default=NextMonthStartUTC(), db_column=db_column("customers", "current_period_end")
    )
    created_at = models.DateTimeField(
        db_default=Now(), editable=False, db_column=db_column("customers", "created_at")
    )

    class Meta:
        db_table = table("customers")
        ordering = ["email"]
        indexes = [
            # The customer list's order: the admin adds -pk to make "email" a total order.
            models.Index(fields=["email", "-id"], name="customers_email_order"),
            # Support's search by an email prefix (lower(email) LIKE 'jane.d%'): the unique index on
            # lower(email) serves only equality under a database collation other than C.
            models.Index(OpClass(Lower("email"), name="text_pattern_ops"), name="customers_email_prefix"),
        ]
        constraints = [
            models.UniqueConstraint(
                Lower("email"),
                name="customers_email_ci_unique",
                violation_error_message="A customer with this email already exists (emails ignore case).",
            ),
            models.CheckConstraint(
                condition=Q(current_period_end__gt=models.F("current_period_start")),
                name="customers_period_ordered",
            ),
        ]

    def __str__(self):
        return self.email


class Project(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        ARCHIVED = "archived"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=GenRandomUUID(), editable=False)
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="projects",
        db_column=db_column("projects", "customer_id"),
    )
    name = models.CharField(max_length=200, db_column=db_column("projects", "name"))
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.ACTIVE,
        db_default=Status.ACTIVE,
        db_column=db_column("projects", "status"),
    )
    created_at = models.DateTimeField(
        db_default=Now(), editable=False, db_column=db_column("projects", "created_at")
    )
    updated_at = models.DateTimeField(
        auto_now=True, db_default=Now(), db_column=db_column("projects", "updated_at")
    )

    class Meta:
        db_table = table("projects")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["active", "archived"]), name="projects_status_valid"
            ),
        ]
        indexes = [
            # COUNT of active projects per customer: opening a period row, reports, reconciliation.
            models.Index(fields=["customer"], condition=Q(status="active"), name="projects_active_by_cust"),
            # Support searches projects by part of the name (usage.admin.NameSearch), among 5M at a
            # million customers: trigrams, so "%term%" is an index lookup, not a scan.
            # On UPPER(name), the expression Django's icontains compares.
            GinIndex(OpClass(Upper("name"), name="gin_trgm_ops"), name="projects_name_trgm"),
        ]
        triggers = triggers.project_triggers()

    def __str__(self):
        return self.name


class Preset(CounterFieldsMixin, models.Model):
    counter_fields = ("usage_count", "last_used_at")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=GenRandomUUID(), editable=False)
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="presets",
        db_column=db_column("presets", "customer_id"),
    )
    name = models.CharField(max_length=200, db_column=db_column("presets", "name"))
    usage_count = models.IntegerField(
        default=0, db_default=0, editable=False, db_column=db_column("presets", "usage_count")
    )
    last_used_at = models.DateTimeField(
        null=True, blank=True, editable=False, db_column=db_column("presets", "last_used_at")
    )
    created_at = models.DateTimeField(
        db_default=Now(), editable=False, db_column=db_column("presets", "created_at")
    )

    class Meta:
        db_table = table("presets")
        ordering = ["name"]
        indexes = [GinIndex(OpClass(Upper("name"), name="gin_trgm_ops"), name="presets_name_trgm")]
        triggers = triggers.preset_triggers()

    def __str__(self):
        return self.name


class PresetUsage(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=GenRandomUUID(), editable=False)
    preset = models.ForeignKey(
        Preset,
        on_delete=models.CASCADE,
        related_name="uses",
        db_column=db_column("preset_usage", "preset_id"),
    )
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="preset_uses",
        db_column=db_column("preset_usage", "customer_id"),
    )
    used_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), db_column=db_column("preset_usage", "used_at")
    )

    class Meta:
        db_table = table("preset_usage")
        ordering = ["-used_at"]
        indexes = [
            # MAX(used_at) of one preset after a use is deleted; COUNT per preset in the report.
            models.Index(fields=["preset", "used_at"], name="preset_usage_used_at"),
        ]
        triggers = triggers.preset_usage_triggers()


class UsageEvent(models.Model):
    """Metered usage, append-only. A correction is a negative event that names its reason."""

    class Metric(models.TextChoices):  # the metered metrics of the catalogue (usage/metrics.py)
        AI_INTERACTION = catalogue.AI_INTERACTIONS.code, catalogue.AI_INTERACTIONS.title
        MINUTES = catalogue.MINUTES.code, catalogue.MINUTES.title

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=GenRandomUUID(), editable=False)
    # No index of its own: usage_events_sum_cover starts with customer_id (one index less per insert).
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="usage_events",
        db_index=False,
        db_column=db_column("usage_events", "customer_id"),
    )
    metric = models.CharField(
        max_length=32, choices=Metric.choices, db_column=db_column("usage_events", "metric")
    )
    quantity = models.DecimalField(
        max_digits=18, decimal_places=3, db_column=db_column("usage_events", "quantity")
    )
    occurred_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), db_column=db_column("usage_events", "occurred_at")
    )
    idempotency_key = models.CharField(
        max_length=200, null=True, blank=True, db_column=db_column("usage_events", "idempotency_key")
    )
    reason = models.TextField(
        blank=True, default="", db_default="", db_column=db_column("usage_events", "reason")
    )
    created_at = models.DateTimeField(
        db_default=Now(), editable=False, db_column=db_column("usage_events", "created_at")
    )

    class Meta:
        db_table = table("usage_events")
        ordering = ["-occurred_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(metric__in=["ai_interaction", "minutes"]), name="usage_events_metric_valid"
            ),
            # Usage is positive; the only negative event is an adjustment that says why.
            models.CheckConstraint(
                condition=Q(quantity__gt=0) | (Q(quantity__lt=0) & ~Q(reason="")),
                name="usage_events_quantity_positive_or_reasoned_adjustment",
            ),
            models.UniqueConstraint(
                fields=["customer", "idempotency_key"], name="usage_events_idempotency_key_per_customer"
            ),
        ]
        indexes = [
            # SUM(quantity) of one customer's metric over one period, from the index alone: the
            # report reads all events in customer order without visiting the table (an index-only
            # scan), and one customer's sum is one range of it.
            models.Index(
                fields=["customer", "metric", "occurred_at"],
                include=["quantity"],
                name="usage_events_sum_cover",
            ),
            # Support pastes an idempotency key to find the event (a retried charge); the unique key
            # above leads with the customer.
            models.Index(
                fields=["idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="usage_events_idempotency_key",
            ),
        ]
        triggers = triggers.usage_event_triggers()


class UsageTracking(CounterFieldsMixin, models.Model):
    """Derived counters, one row per customer per usage period [period_start, period_end).

    No CHECK (count >= 0) on the counters: a counter that history left too low must not make the
    product's DELETE fail. A negative value is visible drift for the report and the recount.
    """

    counter_fields = ("active_projects_count", "ai_interactions_count", "minutes_used", "updated_at")

    if uuid_id("usage_tracking"):  # the product's own key type (usage/names.py); billing-ops' is a bigint
        id = models.UUIDField(
            primary_key=True, default=uuid.uuid4, db_default=GenRandomUUID(), editable=False
        )

    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="usage_periods",
        db_column=db_column("usage_tracking", "customer_id"),
    )
    period_start = models.DateTimeField(db_column=db_column("usage_tracking", "period_start"))
    period_end = models.DateTimeField(db_column=db_column("usage_tracking", "period_end"))
    month = models.CharField(
        max_length=7,
        help_text="YYYY-MM of period_start (UTC)",
        db_column=db_column("usage_tracking", "month"),
    )
    active_projects_count = models.IntegerField(
        default=0, db_default=0, db_column=db_column("usage_tracking", "active_projects_count")
    )
    ai_interactions_count = models.DecimalField(
        max_digits=18,
        decimal_places=3,
        default=0,
        db_default=0,
        db_column=db_column("usage_tracking", "ai_interactions_count"),
    )
    minutes_used = models.DecimalField(
        max_digits=18,
        decimal_places=3,
        default=0,
        db_default=0,
        db_column=db_column("usage_tracking", "minutes_used"),
    )
    updated_at = models.DateTimeField(db_default=Now(), db_column=db_column("usage_tracking", "updated_at"))

    class Meta:
        db_table = table("usage_tracking")
        ordering = ["customer", "-period_start"]
        verbose_name = "usage period"
        indexes = [
            # Finance's month (usage_report --month, the finance pages) and the current periods (the
            # over-limit page: period_end > now()) without a scan of every period ever recorded.
            models.Index(fields=["month", "customer"], name="usage_tracking_month"),
            # A month's periods summed (the month page, the trends, the summaries): a live database
            # stores a month's periods together (each row is inserted as its period opens), and the
            # planner sees that through this index's column alone (pg_stats.correlation of month near
            # 1); the two-column index above counts it at 0.75 and bitmap scans ignore it, so at 1M it
            # read the whole table for a twelfth of it (README, "Finance pages"). month is never
            # updated: counter updates stay HOT.
            models.Index(fields=["month"], name="usage_tracking_by_month"),
            models.Index(fields=["period_end"], name="usage_tracking_period_end"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "period_start"], name="usage_tracking_customer_period"
            ),
            models.CheckConstraint(
                condition=Q(period_end__gt=models.F("period_start")), name="usage_tracking_period_ordered"
            ),
            models.CheckConstraint(
                condition=Q(month__regex=r"^\d{4}-\d{2}$"), name="usage_tracking_month_format"
            ),
            # Periods of one customer never overlap: every event belongs to exactly one row.
            ExclusionConstraint(
                name="usage_tracking_periods_disjoint",
                expressions=[
                    ("customer", RangeOperators.EQUAL),
                    (TstzRange("period_start", "period_end"), RangeOperators.OVERLAPS),
                ],
            ),
        ]
        triggers = triggers.usage_tracking_triggers()

    def __str__(self):
        # No row id on a page (the customer page's inline titled each period "<customer uuid> 2026-12").
        return f"usage period {self.period_start:%Y-%m-%d} → {self.period_end:%Y-%m-%d}"


class UsageMonthChanged(models.Model):
    """A month (usage_tracking.month) whose past periods changed: a counter of an ended period moved (a
    late event, a recount), or a period of a month before this one was opened or deleted. Written by
    usage_tracking's row triggers (usage/triggers.py), whose WHEN clauses are false for every counter
    update of a current period; read by whoever keeps figures of ended months aside (billing's month
    summaries: such a month is computed from the periods again until it is summarized anew)."""

    period_month = models.CharField(max_length=7, primary_key=True)
    changed_at = models.DateTimeField()

    class Meta:
        db_table = "usage_months_changed"

    def __str__(self):
        return self.period_month


ALL_CUSTOMERS = "all customers"  # the scope of a run over every customer


class ReconciliationRun(models.Model):
    """One discrepancy report or reconciliation: who started it, what it found, what it fixed."""

    class Mode(models.TextChoices):
        REPORT = "report"
        APPLY = "apply"

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"

    started_at = models.DateTimeField(db_default=Now(), editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    started_by = models.CharField(max_length=200, help_text="A staff user, or the command that ran it.")
    mode = models.CharField(max_length=8, choices=Mode.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    scope = models.CharField(max_length=200, default=ALL_CUSTOMERS, help_text="All customers, or which ones.")
    batch_size = models.PositiveIntegerField(null=True, blank=True)
    resumed_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_customer_id = models.UUIDField(
        null=True, blank=True, help_text="Checkpoint: batches up to here are done."
    )
    customers_checked = models.PositiveIntegerField(default=0)
    customers_with_drift = models.PositiveIntegerField(default=0)
    discrepancies = models.PositiveIntegerField(default=0)
    fixed = models.PositiveIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "reconciliation_runs"
        ordering = ["-started_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(mode__in=["report", "apply"]), name="reconciliation_runs_mode_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["running", "completed", "failed"]),
                name="reconciliation_runs_status_valid",
            ),
        ]
        permissions = [
            ("reconcile_selection", "Can reconcile the counters of selected customers"),
            ("reconcile_all", "Can reconcile the counters of every customer"),
        ]

    def __str__(self):
        return f"{self.get_mode_display()} #{self.pk} ({self.status})"


class ReconciliationRow(models.Model):
    """One counter that differed from its source of truth, with its value before and after."""

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="rows")
    check_name = models.CharField("check", max_length=32, db_column="check")
    customer_id = models.UUIDField(db_index=True)  # kept as a plain id: history outlives the customer
    email = models.CharField(max_length=254)
    target_id = models.CharField(max_length=64, blank=True, default="")
    tracked = models.JSONField(null=True)
    actual = models.JSONField(null=True)
    difference = models.DecimalField(max_digits=20, decimal_places=3, null=True)
    after = models.JSONField(null=True, blank=True, help_text="The counter after the fix (apply runs).")
    fixed = models.BooleanField(default=False)

    class Meta:
        db_table = "reconciliation_run_rows"
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "check_name"], name="reconciliation_rows_run_check")]

    def __str__(self):
        return f"{self.check_name} {self.email}"


class CounterWriteGrant(models.Model):
    """A transaction allowed to write counters directly (SPEC §4 I5, §10): its id, for as long as one of
    the owner's SECURITY DEFINER recount functions runs in it (usage/sql/usage_counter_writes_granted.sql).

    Only the schema's owner writes it; the app role holds no privilege on it (manage.py db_roles).
    """

    xact = models.BigIntegerField(primary_key=True, help_text="pg_current_xact_id() of the transaction.")

    class Meta:
        db_table = "usage_counter_write_grants"
