"""Admin for the commercial side, and the customer page support works from (SPEC §7).

The customer admin lives here rather than in usage/admin.py because its page shows the plan and the
billing findings: billing may import usage, never the reverse.
"""

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models.functions import Lower
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing.finance import admin as finance_admin  # noqa: F401  (the usage-periods list finance drills into)
from billing.models import AuditLog, CreditDraw, CreditGrant, Plan, Subscription, WebhookEvent
from billing.ops.diagnosis import customer_diagnose
from billing.ops.integrity import ReconciliationBusy, customer_recount, discrepancy_report, usage_reconcile
from billing.services.credits import (
    CREDIT_MAX,
    GOODWILL_NEEDS_REASON,
    CreditGrantError,
    credit_grant,
    credit_quantity_parse,
)
from billing.services.plans import PlanChangeBlocked, plan_change_validate, subscription_change_plan
from billing.services.webhooks import PROCESSORS, webhook_replay
from usage.admin import BigTableAdmin, PresetInline, ReadOnlyAdmin, UsageTrackingInline
from usage.models import Customer

RECONCILE_PERMISSION = "usage.reconcile_selection"
VALIDATE_PERMISSION = "billing.view_plan"
CHANGE_PLAN_PERMISSION = "billing.change_subscription"


class PlanActionForm(helpers.ActionForm):
    """The changelist's action bar, with the plan the plan-change actions aim at."""

    plan = forms.ModelChoiceField(
        Plan.objects.order_by("price"), required=False, empty_label="(target plan)", to_field_name="code"
    )
    reason = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.TextInput(attrs={"placeholder": "reason (superuser override)", "size": 28}),
    )


def _actor(request) -> str:
    return f"{request.user.get_username()} (admin)"


@admin.register(Customer)
class CustomerAdmin(BigTableAdmin):
    list_display = ("email", "name", "current_period_start", "current_period_end", "created_at")
    search_fields = ("email",)
    search_help_text = "Email (exact, any case), an email prefix, or a customer id."
    # Periods are opened by the billing rules (renewals, rollover), never typed in.
    readonly_fields = ("id", "current_period_start", "current_period_end", "created_at")
    fields = ("id", "email", "name", "current_period_start", "current_period_end", "created_at")
    ordering = ("email",)
    inlines = (UsageTrackingInline, PresetInline)
    actions = (
        "discrepancy_report_action",
        "reconcile_action",
        "validate_plan_change_action",
        "change_plan_action",
    )
    action_form = PlanActionForm

    def get_search_results(self, request, queryset, search_term):
        """Use the lower(email) unique index instead of a sequential ILIKE scan."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            pass
        lowered = queryset.annotate(email_lower=Lower("email"))
        if "@" in term:
            return lowered.filter(email_lower=term.lower()), False
        return lowered.filter(email_lower__startswith=term.lower()), False

    def has_reconcile_permission(self, request):
        return request.user.has_perm(RECONCILE_PERMISSION)

    # --- the customer page: counters beside their truth, the fix, Recount --------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        customer = self.get_object(request, object_id)
        if customer is not None:
            extra_context["diagnosis"] = customer_diagnose(customer=customer)
            extra_context["can_recount"] = self.has_reconcile_permission(request)
            extra_context["recount_url"] = reverse("admin:usage_customer_recount", args=[customer.pk])
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/recount/",
                self.admin_site.admin_view(self.recount_view),
                name="usage_customer_recount",
            ),
            *super().get_urls(),
        ]

    def recount_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_reconcile_permission(request):
            raise PermissionDenied
        customer = self.get_object(request, object_id)
        if customer is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        try:
            result = customer_recount(customer=customer, started_by=_actor(request))
        except ReconciliationBusy as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            fixed = result.summary["fixed"]
            self.message_user(
                request,
                f"Recounted {customer.email}: {fixed} counter(s) set to the truth (run #{result.run.pk})."
                if fixed
                else f"Recounted {customer.email}: every counter already matched (run #{result.run.pk}).",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:usage_customer_change", args=[customer.pk]))

    # --- changelist actions ---------------------------------------------------------------------------

    @admin.action(description="Discrepancy report for the selected customers", permissions=["view"])
    def discrepancy_report_action(self, request, queryset):
        customers = list(queryset.order_by("email"))
        # Only a role that may fix counters records its reports as runs; Finance's are read-only (SPEC §7).
        result = discrepancy_report(
            customer_ids=[c.pk for c in customers],
            started_by=_actor(request),
            scope=_scope(customers),
            record=self.has_reconcile_permission(request),
        )
        return TemplateResponse(
            request,
            "admin/usage/customer/discrepancy_report.html",
            {
                **self.admin_site.each_context(request),
                "title": "Discrepancy report",
                "opts": self.opts,
                "customers": customers,
                "result": result,
            },
        )

    @admin.action(description="Reconcile the selected customers' counters", permissions=["reconcile"])
    def reconcile_action(self, request, queryset):
        customers = list(queryset.order_by("email"))
        ids = [c.pk for c in customers]
        if request.POST.get("confirm") == "yes":
            try:
                result = usage_reconcile(
                    customer_ids=ids, apply=True, started_by=_actor(request), scope=_scope(customers)
                )
            except ReconciliationBusy as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return None
            self.message_user(
                request,
                f"Set {result.summary['fixed']} counter(s) of {len(customers)} customer(s) to the truth "
                f"(run #{result.run.pk}).",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:usage_reconciliationrun_change", args=[result.run.pk]))
        dry = usage_reconcile(
            customer_ids=ids, apply=False, started_by=_actor(request) + " dry run", scope=_scope(customers)
        )
        return TemplateResponse(
            request,
            "admin/usage/customer/reconcile_confirmation.html",
            {
                **self.admin_site.each_context(request),
                "title": "Reconcile counters: check the changes",
                "opts": self.opts,
                "customers": customers,
                "result": dry,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )

    # --- plan changes (SPEC §5) ----------------------------------------------------------------------

    def has_validate_permission(self, request):
        return request.user.has_perm(VALIDATE_PERMISSION)

    def has_change_plan_permission(self, request):
        return request.user.has_perm(CHANGE_PLAN_PERMISSION)

    def _target_plan(self, request):
        plan = Plan.objects.filter(code=request.POST.get("plan", "")).first()
        if plan is None:
            self.message_user(request, "Choose the target plan next to the action.", messages.ERROR)
        return plan, request.POST.get("reason", "")[:500]

    @admin.action(description="Validate a plan change to the chosen plan", permissions=["validate"])
    def validate_plan_change_action(self, request, queryset):
        target, _ = self._target_plan(request)
        if target is None:
            return None
        results = [plan_change_validate(customer=c, target=target) for c in queryset.order_by("email")]
        return TemplateResponse(
            request,
            "admin/usage/customer/plan_change_validation.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Plan change to {target.name}",
                "opts": self.opts,
                "target": target,
                "results": results,
                "blocked": sum(1 for r in results if not r.allowed),
            },
        )

    @admin.action(
        description="Change plan to the chosen plan (blocked ones need a superuser and a reason)",
        permissions=["change_plan"],
    )
    def change_plan_action(self, request, queryset):
        target, reason = self._target_plan(request)
        if target is None:
            return None
        changed, refused = 0, []
        for customer in queryset.order_by("email"):
            try:
                result = subscription_change_plan(
                    customer=customer,
                    target=target,
                    actor=_actor(request),
                    override_reason=reason,
                    is_superuser=request.user.is_superuser,
                )
            except PlanChangeBlocked as exc:
                refused.append(f"{customer.email}: {exc}")
                continue
            changed += result.direction != "same"
        if changed:
            self.message_user(request, f"Moved {changed} customer(s) to {target.name}.", messages.SUCCESS)
        for line in refused:
            self.message_user(request, f"Not moved: {line}", messages.ERROR)
        return None


def _scope(customers) -> str:
    text = ", ".join(c.email for c in customers[:5])
    return text + (f" and {len(customers) - 5} more" if len(customers) > 5 else "")


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "code",
        "name",
        "price",
        "max_active_projects",
        "ai_interactions_per_period",
        "minutes_per_period",
        "stripe_price_id",
        "paddle_price_id",
    )


@admin.register(Subscription)
class SubscriptionAdmin(BigTableAdmin):
    list_display = (
        "customer",
        "plan",
        "status",
        "processor",
        "current_period_start",
        "current_period_end",
        "last_event_at",
    )
    list_filter = ("plan", "status", "processor")
    list_select_related = ("customer", "plan")
    search_fields = ("customer__email", "external_subscription_id")
    raw_id_fields = ("customer",)
    readonly_fields = ("id", "created_at", "updated_at", "last_event_at")


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    """Append-only: the database refuses UPDATE and DELETE on audit_log."""

    list_display = ("at", "actor", "action", "target_type", "target_id", "reason")
    list_filter = ("action",)
    search_fields = ("=customer_id", "actor", "=target_id")
    search_help_text = "Exact customer id or target id, or part of the actor."
    readonly_fields = [f.name for f in AuditLog._meta.fields]


class GoodwillGrantForm(forms.ModelForm):
    """Support's goodwill credit: a positive quantity and a reason (both audited)."""

    granted = forms.CharField(
        label="Quantity",
        max_length=40,
        help_text=f"Positive, at most 3 decimals, below {CREDIT_MAX:,}; whole for AI interactions.",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), help_text="Required: it goes in the audit log."
    )

    class Meta:
        model = CreditGrant
        fields = ("customer", "metric", "granted", "expires_at", "reason")

    def clean_granted(self):
        try:
            return credit_quantity_parse(self.cleaned_data["granted"], self.data.get("metric"))
        except CreditGrantError as exc:
            raise forms.ValidationError(str(exc))

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError(GOODWILL_NEEDS_REASON)
        return reason


class CreditDrawInline(admin.TabularInline):
    model = CreditDraw
    fields = ("drawn_at", "quantity", "usage_event_id")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "draws (the ledger remaining is derived from)"


@admin.register(CreditGrant)
class CreditGrantAdmin(BigTableAdmin):
    """Grants are ledger rows: added (goodwill, here; purchases come from webhooks), never edited."""

    list_display = (
        "created_at",
        "customer",
        "metric",
        "granted",
        "remaining",
        "source",
        "expires_at",
        "created_by",
    )
    list_filter = ("source", "metric")
    list_select_related = ("customer",)
    search_fields = ("customer__email", "=external_ref")
    raw_id_fields = ("customer",)
    inlines = (CreditDrawInline,)
    form = GoodwillGrantForm

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()  # a new grant has no draws

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return [f.name for f in CreditGrant._meta.fields]

    def get_fields(self, request, obj=None):
        if obj is None:
            return GoodwillGrantForm.Meta.fields
        return [f.name for f in CreditGrant._meta.fields]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        grant = credit_grant(
            customer=form.cleaned_data["customer"],
            metric=form.cleaned_data["metric"],
            quantity=form.cleaned_data["granted"],
            source=CreditGrant.Source.GOODWILL,
            actor=_actor(request),
            reason=form.cleaned_data["reason"],
            expires_at=form.cleaned_data.get("expires_at"),
        )
        obj.pk = grant.pk
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        pass  # the draws are the ledger's, nothing to save from the add form


API_VERSION_UNEXPECTED = "an API version the handlers were not written for: check what it changed"


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    """The inbox. Failed events keep their error; replay one once its cause is fixed."""

    # What support reads first comes first: at 1,400 px the last columns scroll.
    list_display = (
        "received_at",
        "event_type",
        "status",
        "attempts",
        "last_error",
        "outcome",
        "api_version_shown",
        "processor",
        "event_id",
    )
    list_filter = ("status", "retry_expected", "processor", "event_type")
    search_fields = ("=event_id", "=customer_id")
    search_help_text = "Exact event id or customer id."
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
    actions = ("replay_failed",)

    def has_replay_permission(self, request):
        return request.user.has_perm("billing.replay_webhookevent")

    @admin.display(description="last error")
    def last_error(self, event):
        if not event.error:
            return "—"
        if event.retry_expected:  # the processor delivers it again; a person steps in if that never helps
            return f"{event.error} (waiting for the processor's retry)"
        return event.error

    @admin.display(description="API version", ordering="api_version")
    def api_version_shown(self, event):
        if PROCESSORS[event.processor].api_version_unexpected(event.api_version):
            return format_html('<strong title="{}">⚠ {}</strong>', API_VERSION_UNEXPECTED, event.api_version)
        return event.api_version or "—"

    @admin.action(description="Replay selected failed events", permissions=["replay"])
    def replay_failed(self, request, queryset):
        done, still, skipped = 0, 0, 0
        for event in queryset.order_by("received_at"):
            if event.status != WebhookEvent.Status.FAILED:
                skipped += 1
                continue
            event = webhook_replay(event, actor=_actor(request))
            if event.status == WebhookEvent.Status.FAILED:
                still += 1
                self.message_user(request, f"{event}: still failing: {event.error}", messages.ERROR)
            else:
                done += 1
        self.message_user(
            request, f"Replayed {done} event(s); {still} still failing; {skipped} skipped (not failed)."
        )
