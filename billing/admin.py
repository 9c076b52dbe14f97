from django.contrib import admin

from billing.models import Plan, Subscription
from usage.admin import BigTableAdmin


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "price", "max_active_projects", "ai_interactions_per_period", "minutes_per_period", "stripe_price_id", "paddle_price_id")


@admin.register(Subscription)
class SubscriptionAdmin(BigTableAdmin):
    list_display = ("customer", "plan", "status", "processor", "current_period_start", "current_period_end", "last_event_at")
    list_filter = ("plan", "status", "processor")
    list_select_related = ("customer", "plan")
    search_fields = ("customer__email", "external_subscription_id")
    raw_id_fields = ("customer",)
    readonly_fields = ("id", "created_at", "updated_at", "last_event_at")
