"""Admin for the product's tables. Derived counters are read-only everywhere (SPEC §4, §7)."""

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connection
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html

from usage.models import (
    Preset,
    PresetUsage,
    Project,
    ReconciliationRow,
    ReconciliationRun,
    UsageEvent,
    UsageTracking,
)


class EstimatedCountPaginator(Paginator):
    """Unfiltered changelists of big tables page on the planner's row estimate, not COUNT(*)."""

    @cached_property
    def count(self):
        query = self.object_list.query
        if query.where or query.distinct:
            return super().count
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [self.object_list.model._meta.db_table],
            )
            estimate = cursor.fetchone()[0]
        # reltuples is -1 before the first ANALYZE; small tables are cheap to count exactly.
        return super().count if estimate < 100_000 else estimate


class BigTableAdmin(admin.ModelAdmin):
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50


class ReadOnlyAdmin(BigTableAdmin):
    """Derived data and history: nobody adds, edits or deletes it here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class UsageTrackingInline(admin.TabularInline):
    model = UsageTracking
    fields = (
        "month",
        "period_start",
        "period_end",
        "active_projects_count",
        "ai_interactions_count",
        "minutes_used",
        "updated_at",
    )
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


@admin.register(Project)
class ProjectAdmin(BigTableAdmin):
    list_display = ("name", "customer", "status", "created_at", "updated_at")
    list_filter = ("status",)
    list_select_related = ("customer",)
    search_fields = ("customer__email", "name")
    raw_id_fields = ("customer",)
    readonly_fields = ("id", "created_at", "updated_at")


@admin.register(Preset)
class PresetAdmin(BigTableAdmin):
    list_display = ("name", "customer", "usage_count", "last_used_at")
    list_select_related = ("customer",)
    search_fields = ("customer__email", "name")
    raw_id_fields = ("customer",)
    readonly_fields = ("id", "usage_count", "last_used_at", "created_at")


@admin.register(PresetUsage)
class PresetUsageAdmin(BigTableAdmin):
    list_display = ("preset", "customer", "used_at")
    list_select_related = ("preset", "customer")
    search_fields = ("customer__email",)
    raw_id_fields = ("preset", "customer")


@admin.register(UsageEvent)
class UsageEventAdmin(BigTableAdmin):
    """Append-only: corrections are new (negative, reasoned) events, never edits."""

    list_display = ("customer", "metric", "quantity", "occurred_at", "idempotency_key", "reason")
    list_filter = ("metric",)
    list_select_related = ("customer",)
    search_fields = ("customer__email", "idempotency_key")
    raw_id_fields = ("customer",)
    date_hierarchy = "occurred_at"

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UsageTracking)
class UsageTrackingAdmin(ReadOnlyAdmin):
    """Counters are derived: the triggers write them."""

    list_display = (
        "customer",
        "month",
        "period_start",
        "period_end",
        "active_projects_count",
        "ai_interactions_count",
        "minutes_used",
        "updated_at",
    )
    list_filter = ("month",)
    list_select_related = ("customer",)
    search_fields = ("customer__email",)


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    """History of every report and fix, newest first; its rows one click away."""

    list_display = (
        "id",
        "started_at",
        "mode",
        "status",
        "started_by",
        "scope",
        "customers_checked",
        "customers_with_drift",
        "discrepancies",
        "fixed",
        "rows_link",
    )
    list_filter = ("mode", "status")
    search_fields = ("started_by", "scope")
    readonly_fields = [f.name for f in ReconciliationRun._meta.fields] + ["rows_link"]

    @admin.display(description="rows")
    def rows_link(self, run):
        url = reverse("admin:usage_reconciliationrow_changelist") + f"?run__id__exact={run.pk}"
        return format_html('<a href="{}">{} rows</a>', url, run.discrepancies)


@admin.register(ReconciliationRow)
class ReconciliationRowAdmin(ReadOnlyAdmin):
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
    list_filter = ("check_name", "fixed", "run__mode")
    list_select_related = ("run",)
    search_fields = ("=email", "=customer_id")
    search_help_text = "Exact email or customer id."
    readonly_fields = [f.name for f in ReconciliationRow._meta.fields]
