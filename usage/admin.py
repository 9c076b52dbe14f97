"""Admin for the product's tables. Derived counters are read-only everywhere (SPEC §4, §7)."""

import uuid
from datetime import MAXYEAR, UTC, datetime, timedelta

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.paginator import Paginator
from django.db import OperationalError, connection, connections, models, transaction
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from usage import numbers
from usage.metrics import ACTIVE_PROJECTS, AI_INTERACTIONS, MINUTES, check_label
from usage.models import (
    Customer,
    Preset,
    PresetUsage,
    ReconciliationRow,
    ReconciliationRun,
    UsageEvent,
    UsageTracking,
)
from usage.services.drift import USAGE_CHECK_GROUPS

COUNT_CAP = 1_000
COUNT_BUDGET_MS = 400


class EstimatedCountPaginator(Paginator):
    """Changelists of big tables never COUNT(*) a whole table.

    Unfiltered, they page on the planner's row estimate; filtered or searched, they count at most
    COUNT_CAP + 1 rows (the page shows "more than 1,000"), within COUNT_BUDGET_MS: a rare match along
    the list's index (Paddle customers past due: 0.5 % of 1M) made that count walk 200,000 rows, 26 s
    in bench/admin.py. Past the budget the page says its results were not counted.
    """

    @cached_property
    def count(self):
        query = self.object_list.query
        if query.where or query.distinct:
            count = self._capped_count()
            if count is None:
                self.count_kind = "uncounted"
                return COUNT_CAP + 1  # pages to go on with; the page says the total is unknown
            self.count_kind = "capped" if count > COUNT_CAP else "exact"
            return count
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [self.object_list.model._meta.db_table],
            )
            estimate = cursor.fetchone()[0]
        # reltuples is -1 before the first ANALYZE; small tables are cheap to count exactly.
        if estimate < 100_000:
            return super().count
        self.count_kind = "estimate"
        return estimate

    count_kind = "exact"
    count_cap = COUNT_CAP

    def _capped_count(self) -> int | None:
        """At most COUNT_CAP + 1, or None when counting takes longer than COUNT_BUDGET_MS."""
        using = self.object_list.db
        try:
            # A savepoint: a cancelled count leaves the request's transaction usable; the timeout is
            # set for this transaction only and put back at once.
            with transaction.atomic(using=using), connections[using].cursor() as cursor:
                cursor.execute(
                    "SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)",
                    [f"{COUNT_BUDGET_MS}ms"],
                )
                prior = cursor.fetchone()[0]
                # Unordered: any COUNT_CAP + 1 rows count the same, so an index that serves the
                # filter but not the list's order may answer (failed webhooks: 1,001 of 8,500 along
                # their partial index, not 200,000 along the primary key).
                count = self.object_list.order_by()[: COUNT_CAP + 1].count()
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [prior])
                return count
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != "57014":  # query_canceled: the budget
                raise
            return None


class IndexOrderChangeList(ChangeList):
    """Sorts only by the columns in ``sortable_by``: the admin hides the other headers but still sorts
    by any column a crafted ``?o=`` names, and a sort without an index is a sort of the table."""

    def get_ordering(self, request, queryset):
        if ORDER_VAR in self.params:
            kept = []
            for part in str(self.params[ORDER_VAR]).split("."):
                try:
                    name = self.list_display[int(part.lstrip("-"))]
                except (ValueError, IndexError):
                    continue
                if name in (self.sortable_by or ()):
                    kept.append(part)
            if kept:
                self.params[ORDER_VAR] = ".".join(kept)
            else:
                del self.params[ORDER_VAR]
        return super().get_ordering(request, queryset)


class PlainDecimalField(forms.DecimalField):
    """A quantity as people type it (usage.numbers.plain_decimal): Django's own read "1e3" as 1,000."""

    def to_python(self, value):
        if value not in self.empty_values and not numbers.plain_decimal(value):
            raise forms.ValidationError(numbers.NOT_PLAIN.format(value=str(value).strip()), code="invalid")
        return super().to_python(value)


class BigTableAdmin(admin.ModelAdmin):
    formfield_overrides = {models.DecimalField: {"form_class": PlainDecimalField}}
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice is a scan per choice
    # No column headers to sort by: sorting 20M usage events by a column without an index is a sort of
    # the table per page load. Each list keeps its index-backed ``ordering``; a list may offer a column
    # whose sort an index serves (the customer list: email).
    sortable_by: tuple[str, ...] = ()
    list_per_page = 50

    def get_changelist(self, request, **kwargs):
        return IndexOrderChangeList

    empty_value_display = ""


SEARCH_CUSTOMERS_MAX = 1_000


def customers_matching(term: str, limit: int | None = None) -> list:
    """The ids of the customers a support search names: a customer id, an email (exact, any case) or
    an email prefix (the first ``limit``, SEARCH_CUSTOMERS_MAX, by email), through indexes (the primary key,
    lower(email) and its prefix index customers_email_prefix); never an ILIKE scan.

    A list, not a subquery: ``customer_id IN (<ids>)`` OR an exact id of the row plans as index
    lookups, where an OR with a subquery made PostgreSQL walk the whole table (11 s on 1M
    subscriptions, bench/admin.py)."""
    term = term.strip()
    try:
        return [uuid.UUID(term)]
    except ValueError:
        pass
    lowered = Customer.objects.annotate(email_lower=Lower("email"))
    if "@" in term:
        found = lowered.filter(email_lower=term.lower())
    else:
        found = lowered.filter(email_lower__startswith=term.lower()).order_by("email_lower")
    return list(found.values_list("pk", flat=True)[: limit or SEARCH_CUSTOMERS_MAX])


NAME_SEARCH_MIN = 3  # a trigram index answers "%term%" from three characters on


class CustomerSearch:
    """Search a big table by its customer (``customers_matching``), by exact values of
    ``exact_search_fields`` (each indexed), or by part of ``name_search_fields`` (each with a trigram
    index, terms of NAME_SEARCH_MIN characters or more), instead of the admin's ILIKE '%term%' over
    every row joined to customers: seconds on 20M usage events (bench/admin.py)."""

    search_fields = ("customer__email",)  # shows the search box; the search itself is below
    exact_search_fields: tuple[str, ...] = ()
    name_search_fields: tuple[str, ...] = ()

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        customer_ids = customers_matching(term)
        condition = Q(customer_id__in=customer_ids)
        for field in self.exact_search_fields:
            condition |= Q(**{field: term})
        named_ids = []
        if len(term) >= NAME_SEARCH_MIN:
            # The rows first (their trigram index, at most SEARCH_CUSTOMERS_MAX), then the list by
            # their keys: an OR of the name's ILIKE with the customer walked the list's order through
            # 5M projects when few matched (8 s at 1M, bench/admin.py).
            for field in self.name_search_fields:
                named = self.model._default_manager.filter(**{f"{field}__icontains": term}).order_by()
                named_ids += named.values_list("pk", flat=True)[:SEARCH_CUSTOMERS_MAX]
        if named_ids and not customer_ids and not self.exact_search_fields:
            # Only names matched: the rows by their keys, then sorted. Given them as an IN list,
            # PostgreSQL walked the list's order index for the page's first rows, filtering by the
            # list (73,000 presets read for 50 when a quarter of 1.5M matched, 436 ms at 1M).
            pk_type = self.model._meta.pk.db_type(connection)
            return queryset.filter(pk__in=RawSQL(f"SELECT unnest(%s::{pk_type}[])", [named_ids])), False
        if named_ids:
            condition |= Q(pk__in=named_ids)
        return queryset.filter(condition), False


class ReadOnlyAdmin(BigTableAdmin):
    """Derived data and history: nobody adds, edits or deletes it here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def counter(field: str, description: str):
    """A read-only column showing a counter for people (usage.numbers.number: "1,234", never "0.000")."""

    @admin.display(description=description, ordering=field)
    def show(self, obj):
        return numbers.number(getattr(obj, field))

    show.__name__ = f"{field}_display"
    return show


def moment(field: str, description: str):
    """A read-only column showing a time as "2026-12-05 15:18" (UTC, the header says so): Django's
    "Dec. 5, 2026, 3:18 p.m." is half again as wide, and pushed key columns off lists at 1,400 px."""

    @admin.display(description=f"{description} (UTC)", ordering=field)
    def show(self, obj):
        at = getattr(obj, field)
        return f"{at.astimezone(UTC):%Y-%m-%d %H:%M}" if at else "—"

    show.__name__ = f"{field}_short"
    return show


class CounterColumns:
    """The usage-period counters as columns, formatted."""

    active_projects = counter(ACTIVE_PROJECTS.counter, ACTIVE_PROJECTS.label)
    ai_interactions = counter(AI_INTERACTIONS.counter, AI_INTERACTIONS.label)
    minutes = counter(MINUTES.counter, MINUTES.label)


class MonthFilter(admin.SimpleListFilter):
    """The last 12 months as fixed choices: a range on an indexed column, never a DISTINCT over the table
    (what list_filter on a field and date_hierarchy run on every page load)."""

    title = "month"
    parameter_name = "month"
    field = ""

    @classmethod
    def on(cls, field: str):
        return type(f"MonthFilter_{field}", (cls,), {"field": field})

    def lookups(self, request, model_admin):
        start = timezone.now().date().replace(day=1)
        months = []
        for _ in range(12):
            months.append((start.strftime("%Y-%m"), start.strftime("%B %Y")))
            start = (start - timedelta(days=1)).replace(day=1)
        return months

    def queryset(self, request, queryset):
        try:
            start = datetime.strptime(self.value() or "", "%Y-%m").replace(tzinfo=UTC)
        except ValueError:
            return queryset
        if start.year == MAXYEAR and start.month == 12:
            return queryset.none()  # its end is past the calendar; and past the horizon, so it holds nothing
        end = (start + timedelta(days=32)).replace(day=1)
        return queryset.filter(**{f"{self.field}__gte": start, f"{self.field}__lt": end})


class UsageTrackingInline(CounterColumns, admin.TabularInline):
    model = UsageTracking
    fields = (
        "month",
        "period_start_short",
        "period_end_short",
        "active_projects",
        "ai_interactions",
        "minutes",
        "updated_at_short",
    )
    period_start_short = moment("period_start", "period start")
    period_end_short = moment("period_end", "period end")
    updated_at_short = moment("updated_at", "updated")
    readonly_fields = fields
    ordering = ("-period_start",)
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "usage periods (counters, maintained by triggers)"


class PresetInline(admin.TabularInline):
    model = Preset
    fields = ("name", "usage_count", "last_used_at")
    readonly_fields = ("usage_count", "last_used_at")
    extra = 0
    show_change_link = True


@admin.register(Preset)
class PresetAdmin(CustomerSearch, BigTableAdmin):
    list_display = ("name", "customer", "usage_count", "last_used_at")
    list_select_related = ("customer",)
    ordering = ("-customer_id", "name")  # the customer index (the model's "name" sorted 1.5M presets)
    name_search_fields = ("name",)
    search_help_text = (
        "Part of the preset's name (3 characters or more), or the customer's email (exact, any case), "
        "an email prefix, or a customer id."
    )
    raw_id_fields = ("customer",)
    readonly_fields = ("id", "usage_count", "last_used_at", "created_at")


@admin.register(PresetUsage)
class PresetUsageAdmin(CustomerSearch, BigTableAdmin):
    list_display = ("preset", "customer", "used_at")
    list_select_related = ("preset", "customer")
    ordering = ("-customer_id", "-used_at")  # the customer index (the model's "-used_at" sorted 3.7M uses)
    search_help_text = "The customer's email (exact, any case), an email prefix, or a customer id."
    raw_id_fields = ("preset", "customer")


@admin.register(UsageEvent)
class UsageEventAdmin(CustomerSearch, BigTableAdmin):
    """Append-only: corrections are new (negative, reasoned) events, never edits."""

    list_display = ("customer", "metric", "quantity_display", "occurred_at", "idempotency_key", "reason")
    list_filter = ("metric", MonthFilter.on("occurred_at"))
    list_select_related = ("customer",)
    exact_search_fields = ("idempotency_key",)
    search_help_text = (
        "An idempotency key (exact), or the customer's email (exact, any case), an email prefix, or a "
        "customer id."
    )
    raw_id_fields = ("customer",)
    # Newest first per customer: a backward scan of usage_events_sum_cover, never a sort of the table.
    ordering = ("-customer_id", "-metric", "-occurred_at")
    quantity_display = counter("quantity", "quantity")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UsageTracking)
class UsageTrackingAdmin(CustomerSearch, CounterColumns, ReadOnlyAdmin):
    """Counters are derived: the triggers write them."""

    # Times as "2026-11-28 00:00" (UTC), not "Nov. 28, 2026, midnight": with the long form the
    # transcription minutes ran off the list at 1,400 px (finance's drill-down lands here).
    list_display = (
        "customer",
        "month",
        "period_start_short",
        "period_end_short",
        "active_projects",
        "ai_interactions",
        "minutes",
    )
    list_filter = (MonthFilter.on("period_start"),)
    list_select_related = ("customer",)
    search_help_text = "The customer's email (exact, any case), an email prefix, or a customer id."
    # Newest period first per customer: a backward scan of the (customer, period_start) unique index.
    ordering = ("-customer_id", "-period_start")

    period_start_short = moment("period_start", "period start")
    period_end_short = moment("period_end", "period end")


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    """History of every report and fix, newest first; its rows one click away."""

    # Short times and headers: at 1,400 px "fixed" and the rows' link ran off the list.
    list_display = (
        "id",
        "started_at_short",
        "mode",
        "status",
        "started_by",
        "scope_short",
        "checked",
        "with_drift",
        "drifted",
        "fixed_count",
        "rows_link",
    )
    started_at_short = moment("started_at", "started")

    @admin.display(description="customers", ordering="customers_checked")
    def checked(self, run):
        return numbers.number(run.customers_checked)

    @admin.display(description="with drift", ordering="customers_with_drift")
    def with_drift(self, run):
        return numbers.number(run.customers_with_drift)

    @admin.display(description="drifted counters", ordering="discrepancies")
    def drifted(self, run):
        return numbers.number(run.discrepancies)

    @admin.display(description="fixed", ordering="fixed")
    def fixed_count(self, run):
        return numbers.number(run.fixed)

    @admin.display(description="scope")
    def scope_short(self, run):
        return Truncator(run.scope).chars(40)

    list_filter = ("mode", "status")
    search_fields = ("started_by", "scope")
    fields = (
        "id",
        "mode",
        "status",
        "started_at",
        "finished_at",
        "started_by",
        "scope",
        "progress",
        "summary_display",
        "error",
        "resumed_from",
    )
    readonly_fields = fields
    change_list_template = "admin/usage/reconciliationrun/change_list.html"
    change_form_template = "admin/usage/reconciliationrun/change_form.html"
    ROWS_PER_PAGE = 50

    @admin.display(description="summary")
    def summary_display(self, run):
        """The summary for people: what was checked, found and fixed, and each counter's totals."""
        s = run.summary or {}
        n = numbers.number
        lines = [
            f"{numbers.count_of(run.customers_checked, 'customer')} checked, "
            f"{n(run.customers_with_drift)} with drift, "
            f"{numbers.count_of(run.discrepancies, 'drifted counter')}, {n(run.fixed)} set to the truth."
        ]
        if "remaining_drift" in s:
            lines.append(f"Drifted again while it ran: {n(s['remaining_drift'])}.")
        found = {k: v for k, v in (s.get("findings") or {}).items() if v}
        if found:
            lines.append(
                "Findings: " + ", ".join(f"{k.replace('_', ' ')} {n(v)}" for k, v in found.items()) + "."
            )
        metrics = s.get("metrics") or s.get("metrics_before") or {}
        if metrics:
            lines.append(
                "Totals (tracked / true): "
                + "; ".join(
                    f"{check_label(k)} {n(m.get('tracked'))} / {n(m.get('actual'))}"
                    for k, m in metrics.items()
                )
                + "."
            )
        return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The run's rows inline on its page, paginated (?rows=N)."""
        extra_context = extra_context or {}
        rows = ReconciliationRow.objects.filter(run_id=object_id if str(object_id).isdigit() else None)
        paginator = Paginator(rows.order_by("id"), self.ROWS_PER_PAGE)
        extra_context["rows_page"] = paginator.get_page(request.GET.get("rows"))
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="progress")
    def progress(self, run):
        done, total = run.summary.get("batches_done"), run.summary.get("batches")
        if total is None:
            return "—"
        return f"{numbers.number(done)} of {numbers.number(total)} batches" + (
            " (running)" if run.status == ReconciliationRun.Status.RUNNING else ""
        )

    @admin.display(description="rows")
    def rows_link(self, run):
        url = reverse("admin:usage_reconciliationrow_changelist") + f"?run__id__exact={run.pk}"
        return format_html('<a href="{}">{}</a>', url, numbers.count_of(run.discrepancies, "row"))


class CheckFilter(admin.SimpleListFilter):
    """The registered checks as fixed choices: no DISTINCT over every run's rows per page load."""

    title = "check"
    parameter_name = "check_name"

    def lookups(self, request, model_admin):
        return [(c, c.replace("_", " ")) for group in model_admin.check_groups for c in group.checks]

    def queryset(self, request, queryset):
        return queryset.filter(check_name=self.value()) if self.value() else queryset


@admin.register(ReconciliationRow)
class ReconciliationRowAdmin(ReadOnlyAdmin):
    check_groups = USAGE_CHECK_GROUPS  # the check filter's choices; billing adds its own checks
    list_display = (
        "run",
        "check_name",
        "email",
        "target_id",
        "tracked",
        "actual",
        "difference",
        "after",
        "fixed",
    )
    list_filter = (CheckFilter, "fixed", "run__mode")
    list_select_related = ("run",)
    search_fields = ("=email", "=customer_id")
    search_help_text = "Exact email or customer id."
    readonly_fields = [f.name for f in ReconciliationRow._meta.fields]
