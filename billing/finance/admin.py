"""The usage-periods list as finance drills into it: filtered by month and by plan, with fixed choices.

Re-registered from billing because the plan is billing's (usage never imports billing). The month
filter offers the last 24 months instead of the SELECT DISTINCT month a field filter runs over the
whole table on every page load (STYLE.md, "At scale").
"""

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models.expressions import RawSQL
from django.utils.functional import cached_property

from billing.finance.selectors import last_full_month, month_parse, month_shift
from billing.models import Plan
from billing.selectors import period_plan_sql
from usage.admin import UsageTrackingAdmin as BaseUsageTrackingAdmin
from usage.models import UsageTracking
from usage.names import render

MONTH_CHOICES = 24
COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """A filtered month of a million customers is counted up to COUNT_CAP rows, not to the end: the
    pages past it are reached by narrowing the filter (a plan, a search), as nobody pages that far."""

    @cached_property
    def count(self):
        return self.object_list[: COUNT_CAP + 1].count()


class MonthFilter(admin.SimpleListFilter):
    title = "month the period started in"
    parameter_name = "month"

    def lookups(self, request, model_admin):
        newest = month_shift(last_full_month(), 1)  # the current month
        months = [month_shift(newest, -i) for i in range(MONTH_CHOICES)]
        asked = self.value()
        if asked and asked not in months:
            months.append(asked)  # a drill-down to an older month keeps its choice visible
        return [(m, m) for m in months]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            return queryset.filter(month=month_parse(self.value()))
        except ValueError:
            return queryset.none()


class PlanFilter(admin.SimpleListFilter):
    """The plan in effect for the period (stamped on it: billing.selectors.period_plan_sql), as usage_report
    has it."""

    title = "plan"
    parameter_name = "plan"

    def lookups(self, request, model_admin):
        self.plans = list(Plan.objects.order_by("price", "code").values_list("code", "name", "pk"))
        return [(code, name) for code, name, _ in self.plans]

    def queryset(self, request, queryset):
        code = self.value()
        if not code:
            return queryset
        if code not in {c for c, _ in self.lookup_choices}:
            return queryset.none()  # no such plan (and never a NUL byte sent to PostgreSQL)
        # The plan in effect for each period (the one stamped on it; a period not stamped yet: the live
        # plan), by its one definition, as usage_report reads it.
        plan_id = next(pk for c, _, pk in self.plans if c == code)
        period_plan = RawSQL(render(period_plan_sql("usage_tracking")), [])
        return queryset.alias(period_plan_id=period_plan).filter(period_plan_id=plan_id)


admin.site.unregister(UsageTracking)


@admin.register(UsageTracking)
class UsageTrackingAdmin(BaseUsageTrackingAdmin):
    list_filter = (MonthFilter, PlanFilter)
    paginator = CappedCountPaginator
