"""Admin for the commercial side, and the customer page support works from (SPEC §7).

The customer admin lives here rather than in usage/admin.py because its page shows the plan and the
billing findings: billing may import usage, never the reverse.
"""

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, Exists, OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from billing.dashboard import dashboard_figures
from billing.finance import admin as finance_admin  # noqa: F401  (the usage-periods list finance drills into)
from billing.models import AuditLog, CreditDraw, CreditGrant, Plan, RunFinding, Subscription, WebhookEvent
from billing.ops.checks import CHECK_GROUPS
from billing.ops.diagnosis import COUNTER_LABELS, customer_diagnose
from billing.ops.findings import over_limit
from billing.ops.integrity import (
    ReconciliationBusy,
    customer_recount,
    discrepancy_report,
    reconcile_all_start,
    usage_reconcile,
)
from billing.selectors import (
    DEFAULT_PLAN_CODE,
    customer_usage,
    last_full_report,
    last_full_run,
)
from billing.services.audit import REASON_MAX, audit_changes
from billing.services.credits import (
    CREDIT_MAX,
    GOODWILL_NEEDS_REASON,
    CreditGrantError,
    credit_grant,
    credit_quantity_typed,
)
from billing.services.plans import (
    PlanChangeBlocked,
    plan_change_validate,
    plan_resolve,
    subscription_change_plan,
)
from billing.services.projects import (
    VERB_CREATE,
    ProjectLimitReached,
    project_change_verb,
    project_create,
    project_limit_check,
    project_update,
)
from billing.services.webhooks import PROCESSORS, webhook_replay
from usage import admin as usage_admin
from usage.admin import (
    SEARCH_CUSTOMERS_MAX,
    BigTableAdmin,
    CustomerSearch,
    IndexOrderChangeList,
    PresetInline,
    ReadOnlyAdmin,
    UsageTrackingInline,
    customers_matching,
)
from usage.metrics import metric_label
from usage.models import Customer, Project, ReconciliationRow, ReconciliationRun, UsageEvent
from usage.names import render
from usage.numbers import count_of, limit, money, number
from usage.text import echo

RECONCILE_PERMISSION = "usage.reconcile_selection"
VALIDATE_PERMISSION = "billing.view_plan"
CHANGE_PLAN_PERMISSION = "billing.change_subscription"
GRANT_PERMISSION = "billing.add_creditgrant"
SELECTION_MAX = 200
SELECTION_TOO_BIG_RECONCILE = (
    "Select at most 200 customers to reconcile here. Reconciling every customer is a superuser's "
    "background run: Reconciliation runs › Reconcile every customer (or manage.py reconcile_usage --apply)."
)
SELECTION_TOO_BIG_REPORT = (
    "Select at most 200 customers for a report here; the report over every customer is "
    "manage.py usage_discrepancies (from cron), and its last run is on the dashboard."
)


class PlanActionForm(helpers.ActionForm):
    """The changelist's action bar, with the plan the plan-change actions aim at."""

    plan = forms.ModelChoiceField(
        Plan.objects.order_by("price"), required=False, empty_label="(target plan)", to_field_name="code"
    )
    reason = forms.CharField(
        required=False,
        max_length=REASON_MAX,
        widget=forms.TextInput(attrs={"placeholder": "reason (superuser override)", "size": 28}),
    )


def _dashboard_index(index):
    """The admin index with the dashboard's figures (billing.dashboard) above the apps."""

    def view(request, extra_context=None):
        return index(request, {**(extra_context or {}), "dashboard": dashboard_figures()})

    return view


admin.site.index = _dashboard_index(admin.site.index)
# No navigation sidebar: its 300 px pushed the lists' key columns off-screen at 1,400 px (the
# breadcrumbs and the index reach every model).
admin.site.enable_nav_sidebar = False


def _actor(request) -> str:
    return f"{request.user.get_username()} (admin)"


# --- the customer list's filters (SPEC §7 Support) -------------------------------------------------
# Each is a correlated condition the list evaluates row by row along its email index, so a page of 50
# stops after 50 matches; the count behind a filter is capped (usage.admin.EstimatedCountPaginator).

# The customer's live subscription by its one definition (billing/sql/billing_live_plan.sql).
_LIVE = RawSQL(render("SELECT subscription_id FROM billing_live_plan(customers.id)"), ())


def _live_subscription(*conditions, **fields):
    return Exists(Subscription.objects.filter(*conditions, pk=_LIVE, **fields))


# The same, read from the subscription's side: is this subscription its customer's live one?
_LIVE_OF_SUBSCRIPTION = RawSQL("SELECT subscription_id FROM billing_live_plan(subscriptions.customer_id)", ())


class LiveSubscriptionFilter(admin.SimpleListFilter):
    """A filter on the live subscription's fields (plan, status, processor). When few customers have
    a subscription with every field the list's live filters ask for, the changelist gives each the
    customers whose live subscription has them (``customer_ids``, CustomerChangeList.get_filters):
    the list is then those ids along its email index."""

    customer_ids: list | None = None
    applied = False

    def subscription_fields(self) -> dict:
        return {}

    def narrowed(self, queryset):
        if self.customer_ids is None:
            return None
        if self.applied:
            return queryset
        # One array parameter: as an IN list of 5,000 literals the statement took longer to send and
        # parse than to run.
        return queryset.filter(
            RawSQL(render("customers.id = ANY(%s::uuid[])"), [self.customer_ids], BooleanField())
        )


class PlanFilter(LiveSubscriptionFilter):
    title = "plan"
    parameter_name = "plan"

    def lookups(self, request, model_admin):
        return list(Plan.objects.order_by("price").values_list("code", "name"))

    def queryset(self, request, queryset):
        code = self.value()
        if code not in Plan.Code.values:
            return queryset
        if code == DEFAULT_PLAN_CODE:  # no live subscription counts as Free
            return queryset.filter(~_live_subscription(~Q(plan__code=code)))
        narrowed = self.narrowed(queryset)
        return (
            narrowed
            if narrowed is not None
            else queryset.filter(_live_subscription(**self.subscription_fields()))
        )

    def subscription_fields(self):
        code = self.value()
        return {"plan__code": code} if code in Plan.Code.values and code != DEFAULT_PLAN_CODE else {}


class SubscriptionStatusFilter(LiveSubscriptionFilter):
    title = "subscription status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [*Subscription.Status.choices[:3], ("none", "none (Free)")]

    def queryset(self, request, queryset):
        status = self.value()
        if status == "none":
            return queryset.filter(~_live_subscription())
        if status in Subscription.Status.values:
            narrowed = self.narrowed(queryset)
            return (
                narrowed
                if narrowed is not None
                else queryset.filter(_live_subscription(**self.subscription_fields()))
            )
        return queryset

    def subscription_fields(self):
        return {"status": self.value()} if self.value() in Subscription.Status.values else {}


class ProcessorFilter(LiveSubscriptionFilter):
    title = "processor"
    parameter_name = "processor"

    def lookups(self, request, model_admin):
        return Subscription.Processor.choices

    def queryset(self, request, queryset):
        if self.value() in Subscription.Processor.values:
            narrowed = self.narrowed(queryset)
            return (
                narrowed
                if narrowed is not None
                else queryset.filter(_live_subscription(**self.subscription_fields()))
            )
        return queryset

    def subscription_fields(self):
        return {"processor": self.value()} if self.value() in Subscription.Processor.values else {}


_ACTIVE_PROJECTS = RawSQL(
    render("(SELECT count(*) FROM projects p WHERE p.customer_id = customers.id AND p.status = 'active')"), ()
)


class ActiveProjectsFilter(admin.SimpleListFilter):
    """By the projects themselves, not the counter."""

    title = "active projects"
    parameter_name = "projects"
    RANGES = {"0": (0, 0), "1-3": (1, 3), "4-10": (4, 10), "gt3": (4, None), "gt10": (11, None)}

    def lookups(self, request, model_admin):
        return [
            ("0", "none"),
            ("1-3", "1 to 3"),
            ("4-10", "4 to 10"),
            ("gt3", "more than 3"),
            ("gt10", "more than 10"),
        ]

    def queryset(self, request, queryset):
        if self.value() not in self.RANGES:
            return queryset
        low, high = self.RANGES[self.value()]
        queryset = queryset.alias(active_projects=_ACTIVE_PROJECTS).filter(active_projects__gte=low)
        return queryset if high is None else queryset.filter(active_projects__lte=high)


class LastReportFindingFilter(admin.SimpleListFilter):
    """The customers the last full report found with ``check`` (its findings, kept with the run, by
    index), as the dashboard counts them: evaluated row by row, these filters walked every customer at
    a million (bench/admin.py)."""

    check = ""
    label = ""

    def lookups(self, request, model_admin):
        return [("yes", self.label)]

    def queryset(self, request, queryset):
        if self.value() != "yes":
            return queryset
        run = last_full_report()
        if run is None:
            return queryset.none()
        found = RunFinding.objects.filter(run=run, check_name=self.check).values("customer_id")
        return queryset.filter(pk__in=found)


class OverLimitFilter(LastReportFindingFilter):
    """Over a limit at the last full report; the OVER flag on each listed row is still computed now,
    from the truth."""

    title = "over a limit"
    parameter_name = "over"
    check = "over_limit"
    label = "at the last full report"


class DriftFilter(admin.SimpleListFilter):
    """Drift as the last report over every customer found it (cheap: that run's rows, by index)."""

    title = "drift"
    parameter_name = "drift"

    def lookups(self, request, model_admin):
        return [("last", "at the last full report")]

    def queryset(self, request, queryset):
        if self.value() != "last":
            return queryset
        run = last_full_run()
        if run is None:
            return queryset.none()
        # An apply run's rows were drift it fixed; what it could not fix (and a report's rows) remains.
        drifted = ReconciliationRow.objects.filter(run=run, fixed=False).values("customer_id")
        return queryset.filter(pk__in=drifted)


class StalePeriodFilter(LastReportFindingFilter):
    """A period that ended unrolled (stale_period) at the last full report. Cron opens the next
    periods every few minutes (roll_usage_periods)."""

    title = "period"
    parameter_name = "stale"
    check = "stale_period"
    label = "ended without a rollover, at the last full report"


LIVE_FILTER_CANDIDATES = 10_000


class CustomerChangeList(IndexOrderChangeList):
    """Each page's plan, counters and their truth in one query (CUSTOMER_USAGE_SQL), and its findings."""

    def get_filters(self, request):
        """When at most LIVE_FILTER_CANDIDATES customers have a subscription with every field the
        live-subscription filters ask for (one index-only range of subscriptions_live_filter), those
        whose live one has them (billing_live_plan, from the subscription's side) become the list's
        ids, read along its email index. A rare pair (Paddle, past due: 5,086 of 1M) walked 200,000
        customers checking each one's live subscription (1.3 s at 1M, bench/admin.py); as ids beside
        the per-customer check, PostgreSQL fetched and sorted all of them (1 to 2 s under load). A
        common value (active: 835,000) keeps the per-customer check along the email order, which
        finds a page's 50 within a few hundred customers."""
        result = super().get_filters(request)
        live = [
            spec
            for spec in result[0]
            if isinstance(spec, LiveSubscriptionFilter) and spec.subscription_fields()
        ]
        fields = {k: v for spec in live for k, v in spec.subscription_fields().items()}
        if fields:
            having = Subscription.objects.filter(**fields).order_by()
            if having[LIVE_FILTER_CANDIDATES : LIVE_FILTER_CANDIDATES + 1].count() == 0:
                ids = list(having.filter(pk=_LIVE_OF_SUBSCRIPTION).values_list("customer_id", flat=True))
                for n, spec in enumerate(live):
                    spec.customer_ids, spec.applied = ids, n > 0
        return result

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        ids = [c.pk for c in self.result_list]
        usage = customer_usage(ids) if ids else {}
        over = {}
        for finding in over_limit(ids) if ids else ():
            over.setdefault(finding.customer_id, []).append(finding.detail)
        for customer in self.result_list:
            customer.usage = usage.get(customer.pk)
            customer.over_limits = over.get(str(customer.pk), [])


@admin.register(Customer)
class CustomerAdmin(BigTableAdmin):
    list_display = (
        "email",
        "name",
        "plan_column",
        "projects_column",
        "drift_column",
        "over_limit_column",
    )
    list_filter = (
        PlanFilter,
        SubscriptionStatusFilter,
        ProcessorFilter,
        ActiveProjectsFilter,
        OverLimitFilter,
        DriftFilter,
        StalePeriodFilter,
    )
    search_fields = ("email",)
    sortable_by = ("email",)  # customers_email_order; the other columns would sort a million rows
    search_help_text = "Email (exact, any case), an email prefix, a customer id, or a Stripe or Paddle customer or subscription id."
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

    def get_changelist(self, request, **kwargs):
        return CustomerChangeList

    def get_object(self, request, object_id, from_field=None):
        """Once per request: the customer page reads it for its diagnosis and again for its form."""
        cache = request.__dict__.setdefault("_customers", {})
        key = (object_id, from_field)
        if key not in cache:
            cache[key] = super().get_object(request, object_id, from_field)
        return cache[key]

    @admin.display(description="plan")
    def plan_column(self, customer):
        """The plan, and under it the subscription: its status and processor (none: Free by default)."""
        u = customer.usage
        if u is None:
            return "—"
        status = (
            "none"
            if u.subscription_status is None
            else f"{u.subscription_status.replace('_', ' ')} ({u.processor})"  # "past due", not "past_due"
        )
        return format_html('{}<div class="help">{}</div>', u.plan_name, status)

    @admin.display(description="projects / limit")
    def projects_column(self, customer):
        u = customer.usage
        if u is None:
            return "—"
        return f"{number(u.projects_tracked or 0)} / {limit(u.projects_allowance)}"

    @admin.display(description="drift")
    def drift_column(self, customer):
        u = customer.usage
        if u is None or not u.drifted:
            return ""
        return format_html(
            '<strong class="drift-flag" style="color:var(--error-fg)">DRIFT</strong>'
            '<div class="help">{}</div>',
            ", ".join(u.drifted),
        )

    @admin.display(description="over limit")
    def over_limit_column(self, customer):
        if not customer.over_limits:
            return ""
        return format_html(
            '<strong class="over-limit-flag" style="color:var(--error-fg)">OVER</strong>'
            '<div class="help">{}</div>',
            "; ".join(customer.over_limits),
        )

    def get_search_results(self, request, queryset, search_term):
        """An email (exact, any case), an email prefix or a customer id (usage.admin.customers_matching),
        or a processor's subscription or customer id (SPEC §7): each through an index, never an ILIKE scan."""
        term = search_term.strip()
        if not term:
            return queryset, False
        by_processor = Subscription.objects.filter(
            Q(external_subscription_id=term) | Q(external_customer_id=term)
        ).values_list("customer_id", flat=True)
        matched = customers_matching(term, limit=SEARCH_CUSTOMERS_MAX + 1)
        if len(matched) > SEARCH_CUSTOMERS_MAX:
            # An email prefix many customers share: the list holds the first SEARCH_CUSTOMERS_MAX by
            # email, and says so (the count above it would read as if that were all of them).
            matched = matched[:SEARCH_CUSTOMERS_MAX]
            if not getattr(request, "_search_capped_said", False):  # the admin may search twice
                request._search_capped_said = True
                messages.warning(
                    request,
                    f"More than {SEARCH_CUSTOMERS_MAX:,} customers have an email starting with "
                    f"{echo(term)}: the list shows the first {SEARCH_CUSTOMERS_MAX:,} by email. "
                    "Type more of the email to find the others.",
                )
        return queryset.filter(pk__in=[*by_processor[:SELECTION_MAX], *matched]), False

    def has_reconcile_permission(self, request):
        return request.user.has_perm(RECONCILE_PERMISSION)

    # --- the customer page: counters beside their truth, the fix, Recount --------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        customer = self.get_object(request, object_id)
        if customer is not None:
            plans = list(Plan.objects.order_by("price"))
            extra_context["diagnosis"] = customer_diagnose(
                customer=customer, plans=plans, trigger_health=False
            )
            extra_context["can_recount"] = self.has_reconcile_permission(request)
            extra_context["recount_url"] = reverse("admin:usage_customer_recount", args=[customer.pk])
            extra_context["can_grant"] = request.user.has_perm(GRANT_PERMISSION)
            extra_context["can_validate"] = self.has_validate_permission(request)
            extra_context["plans"] = plans
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/recount/",
                self.admin_site.admin_view(self.recount_view),
                name="usage_customer_recount",
            ),
            path(
                "<path:object_id>/grant/",
                self.admin_site.admin_view(self.grant_view),
                name="usage_customer_grant",
            ),
            path(
                "<path:object_id>/plan/",
                self.admin_site.admin_view(self.plan_view),
                name="usage_customer_plan",
            ),
            *super().get_urls(),
        ]

    def _page(self, request, customer, template, title, **context):
        return TemplateResponse(
            request,
            f"admin/usage/customer/{template}",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "opts": self.opts,
                "original": customer,
                **context,
            },
        )

    def grant_view(self, request, object_id):
        """Goodwill credit from the customer's page: the customer is this one, the rest is the form."""
        if not request.user.has_perm(GRANT_PERMISSION):
            raise PermissionDenied
        customer = self.get_object(request, object_id)
        if customer is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        form = CustomerGrantForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                grant = credit_grant(
                    customer=customer,
                    metric=form.cleaned_data["metric"],
                    quantity=form.cleaned_data["granted"],
                    source=CreditGrant.Source.GOODWILL,
                    actor=_actor(request),
                    reason=form.cleaned_data["reason"],
                    expires_at=form.cleaned_data.get("expires_at"),
                )
            except CreditGrantError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    f"Granted {number(grant.granted)} {metric_label(grant.metric)} of goodwill credit to "
                    f"{customer.email}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:usage_customer_change", args=[customer.pk]))
        return self._page(request, customer, "grant.html", f"Grant credit to {customer.email}", form=form)

    def plan_view(self, request, object_id):
        """Validate a plan change (GET ?to=PLAN: writes nothing), then change it (POST, confirmed)."""
        if not self.has_validate_permission(request):
            raise PermissionDenied
        customer = self.get_object(request, object_id)
        if customer is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        page = reverse("admin:usage_customer_change", args=[customer.pk])
        data = request.POST if request.method == "POST" else request.GET
        if not data.get("to", "").strip():
            self.message_user(request, "Choose the plan to validate a change to.", messages.ERROR)
            return HttpResponseRedirect(page)
        try:
            target = plan_resolve(data["to"])
        except ValueError as exc:  # "no plan 'platinum'; plans are: free, starter, …"
            self.message_user(request, f"Not validated: {exc}.", messages.ERROR)
            return HttpResponseRedirect(page)
        if request.method == "POST":
            if not self.has_change_plan_permission(request):
                raise PermissionDenied
            try:
                result = self._change_plan(request, customer, target, data.get("reason", ""))
            except PlanChangeBlocked as exc:
                self.message_user(request, f"Not moved to {target.name}: {exc}", messages.ERROR)
            else:
                if result.direction == "same":
                    self.message_user(request, f"{customer.email} is already on {target.name}.")
                else:
                    self.message_user(
                        request,
                        f"Moved {customer.email} to {target.name} ({result.direction}).",
                        messages.SUCCESS,
                    )
            return HttpResponseRedirect(page)
        result = plan_change_validate(customer=customer, target=target)
        return self._page(
            request,
            customer,
            "plan_change.html",
            f"Plan change for {customer.email}: {result.current.name if result.current else 'none'} → {target.name}",
            result=result,
            can_change=self.has_change_plan_permission(request) and result.direction != "same",
            superuser=request.user.is_superuser,
            reason_max=REASON_MAX,
        )

    def _change_plan(self, request, customer, target, reason):
        """The one admin path to subscription_change_plan: the page's button and the list's action."""
        return subscription_change_plan(
            customer=customer,
            target=target,
            actor=_actor(request),
            override_reason=reason,
            is_superuser=request.user.is_superuser,
        )

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
                f"Recounted {customer.email}: {count_of(fixed, 'counter')} set to the truth (run #{result.run.pk})."
                if fixed
                else f"Recounted {customer.email}: every counter already matched (run #{result.run.pk}).",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:usage_customer_change", args=[customer.pk]))

    # --- changelist actions ---------------------------------------------------------------------------

    def _too_many(self, request, queryset, message) -> bool:
        """Selections are bounded (one request, one confirmation page): every customer is a batch job."""
        if queryset[: SELECTION_MAX + 1].count() <= SELECTION_MAX:
            return False
        self.message_user(request, message, messages.ERROR)
        return True

    @admin.action(description="Discrepancy report for the selected customers", permissions=["view"])
    def discrepancy_report_action(self, request, queryset):
        if self._too_many(request, queryset, SELECTION_TOO_BIG_REPORT):
            return None
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
        if self._too_many(request, queryset, SELECTION_TOO_BIG_RECONCILE):
            return None
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
                f"Set {count_of(result.summary['fixed'], 'counter')} of {count_of(len(customers), 'customer')} to the truth "
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
        return plan, request.POST.get("reason", "")

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
                "checked": count_of(len(results), "customer"),
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
                result = self._change_plan(request, customer, target, reason)
            except PlanChangeBlocked as exc:
                refused.append(f"{customer.email}: {exc}")
                continue
            changed += result.direction != "same"
        if changed:
            self.message_user(
                request, f"Moved {count_of(changed, 'customer')} to {target.name}.", messages.SUCCESS
            )
        for line in refused:
            self.message_user(request, f"Not moved: {line}", messages.ERROR)
        return None


def _scope(customers) -> str:
    text = ", ".join(c.email for c in customers[:5])
    return text + (f" and {len(customers) - 5} more" if len(customers) > 5 else "")


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    """Prices with their currency and allowances as people read them (it listed "1900" and "-")."""

    list_display = (
        "code",
        "name",
        "price_display",
        "projects_display",
        "ai_interactions_display",
        "minutes_display",
        "stripe_price_id",
        "paddle_price_id",
    )

    @admin.display(description="price a month", ordering="price")
    def price_display(self, plan):
        return money(plan.price)

    @admin.display(description="active projects", ordering="max_active_projects")
    def projects_display(self, plan):
        return limit(plan.max_active_projects)

    @admin.display(description="AI interactions a period", ordering="ai_interactions_per_period")
    def ai_interactions_display(self, plan):
        return limit(plan.ai_interactions_per_period)

    @admin.display(description="transcription minutes a period", ordering="minutes_per_period")
    def minutes_display(self, plan):
        return limit(plan.minutes_per_period)


@admin.register(Subscription)
class SubscriptionAdmin(CustomerSearch, BigTableAdmin):
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
    ordering = ("-customer_id", "-created_at")  # the customer index, small sorts per customer
    exact_search_fields = ("external_subscription_id", "external_customer_id")
    search_help_text = (
        "The customer's email (exact, any case), an email prefix, a customer id, "
        "or the processor's subscription or customer id."
    )
    raw_id_fields = ("customer",)
    readonly_fields = ("id", "created_at", "updated_at", "last_event_at")


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    """Append-only: the database refuses UPDATE and DELETE on audit_log."""

    # Whose entry it is by email, never the target's row id; a long reason cut to a line (its page shows
    # it whole), so every column fits at 1,400 px.
    list_display = ("at", "actor", "action", "customer_email", "changes", "reason_short")

    class Media:
        css = {"all": ("billing/long-text.css",)}

    list_filter = ("action",)
    ordering = ("-id",)  # append-only: the primary key is the time order, no sort of the log
    search_fields = ("actor",)
    search_help_text = "A customer id (its entries, by index), or part of the actor."
    # Before and after as a readable list of changes (SPEC §7), never the stored JSON.
    fields = [f.name for f in AuditLog._meta.fields if f.name not in ("before", "after")] + ["changes"]
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        """A customer id through its index; an OR with the actor's ILIKE scanned the whole log."""
        term = search_term.strip()
        try:
            return queryset.filter(customer_id=uuid.UUID(term)), False
        except ValueError:
            return super().get_search_results(request, queryset, term)

    def get_queryset(self, request):
        # The customer's email by its primary key, for the page's rows only: no join of the log.
        email = Customer.objects.filter(pk=OuterRef("customer_id")).values("email")[:1]
        return super().get_queryset(request).annotate(customer_email=Subquery(email))

    @admin.display(description="customer")
    def customer_email(self, entry):
        return getattr(entry, "customer_email", None) or "—"

    @admin.display(description="reason")
    def reason_short(self, entry):
        return Truncator(entry.reason).chars(120) or "—"

    @admin.display(description="changes")
    def changes(self, entry):
        lines = audit_changes(entry.before, entry.after, COUNTER_LABELS)
        return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines)) if lines else "—"


class GoodwillGrantForm(forms.ModelForm):
    """Support's goodwill credit: a positive quantity and a reason (both audited)."""

    granted = forms.CharField(
        label="Quantity",
        max_length=40,
        help_text=f"Positive, at most 3 decimals, below {CREDIT_MAX:,} (like 250, 1,000 or 12.5); whole for AI interactions.",
    )
    reason = forms.CharField(
        max_length=REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=f"Required, at most {REASON_MAX} characters: it goes in the audit log.",
    )

    class Meta:
        model = CreditGrant
        fields = ("customer", "metric", "granted", "expires_at", "reason")

    def clean_granted(self):
        try:
            return credit_quantity_typed(self.cleaned_data["granted"], self.data.get("metric"))
        except CreditGrantError as exc:
            raise forms.ValidationError(str(exc))

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError(GOODWILL_NEEDS_REASON)
        return reason

    def clean_expires_at(self):
        """Credit that has already expired could never be used: a time in the past is a typo."""
        expires = self.cleaned_data.get("expires_at")
        if expires is not None and expires <= timezone.now():
            raise forms.ValidationError(
                f"{expires:%Y-%m-%d %H:%M} UTC has passed: credit that expired then could never be "
                "used. Give a time in the future, or leave it empty for credit that never expires."
            )
        return expires


class CustomerGrantForm(forms.Form):
    """Goodwill credit from a customer's page: positive, bounded, with a reason (the service checks)."""

    metric = forms.ChoiceField(choices=UsageEvent.Metric.choices)
    granted = GoodwillGrantForm.base_fields["granted"]
    expires_at = forms.DateTimeField(
        required=False, label="Expires at", help_text="Empty = never expires. UTC, like 2027-01-31 23:59."
    )
    reason = GoodwillGrantForm.base_fields["reason"]
    clean_granted = GoodwillGrantForm.clean_granted
    clean_reason = GoodwillGrantForm.clean_reason
    clean_expires_at = GoodwillGrantForm.clean_expires_at


class CreditDrawInline(admin.TabularInline):
    model = CreditDraw
    fields = ("drawn_at", "quantity_display", "usage_event_id")
    quantity_display = usage_admin.counter("quantity", "quantity")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "draws (the ledger remaining is derived from)"


@admin.register(CreditGrant)
class CreditGrantAdmin(CustomerSearch, BigTableAdmin):
    """Grants are ledger rows: added (goodwill, here; purchases come from webhooks), never edited."""

    list_display = (
        "created_at_short",
        "customer",
        "metric",
        "granted_display",
        "remaining_display",
        "source",
        "expires_at_short",
        "created_by",
    )
    created_at_short = usage_admin.moment("created_at", "created")
    expires_at_short = usage_admin.moment("expires_at", "expires")
    granted_display = usage_admin.counter("granted", "granted")
    remaining_display = usage_admin.counter("remaining", "remaining")
    list_filter = ("source", "metric")
    list_select_related = ("customer",)
    exact_search_fields = ("external_ref",)
    ordering = ("-customer_id", "-created_at")  # the customer index, small sorts per customer
    search_help_text = (
        "The customer's email (exact, any case), an email prefix, a customer id, or the payment id."
    )
    raw_id_fields = ("customer",)
    inlines = (CreditDrawInline,)
    form = GoodwillGrantForm

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()  # a new grant has no draws

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return self._shown_fields()

    def get_fields(self, request, obj=None):
        if obj is None:
            return GoodwillGrantForm.Meta.fields
        return self._shown_fields()

    @staticmethod
    def _shown_fields():
        """A grant's page: every field, the quantities formatted ("1,000", not "1000.000")."""
        shown = {"granted": "granted_display", "remaining": "remaining_display"}
        return [shown.get(f.name, f.name) for f in CreditGrant._meta.fields]

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
        obj.pk, obj.source, obj.granted = grant.pk, grant.source, grant.granted
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        pass  # the draws are the ledger's, nothing to save from the add form


class ProjectForm(forms.ModelForm):
    """A project's page: becoming active for a customer (add, un-archive, move) checks its plan's limit.

    The check runs here, under the customer's period-row lock, so the refusal is a form error that
    writes nothing; the admin's change view is one transaction, so the lock holds until the service
    saves (save_model), which checks again under it and audits an override.
    """

    override_reason = forms.CharField(
        required=False,
        max_length=REASON_MAX,
        label="Override reason",
        help_text="Superusers only: goes past the plan's active-projects limit; it goes in the audit log.",
    )

    is_superuser = False  # set per request by ProjectAdmin.get_form

    class Meta:
        model = Project
        fields = ("customer", "name", "status")

    def clean(self):
        cleaned = super().clean()
        customer, status = cleaned.get("customer"), cleaned.get("status")
        if customer is None or status is None:
            return cleaned
        if self.instance._state.adding:
            verb = VERB_CREATE if status == Project.Status.ACTIVE else None
        else:  # the instance still holds the stored values: the form copies its data in after clean()
            verb = project_change_verb(project=self.instance, customer=customer, status=status)
        if verb:
            try:
                project_limit_check(
                    customer=customer,
                    verb=verb,
                    override_reason=cleaned.get("override_reason", ""),
                    is_superuser=self.is_superuser,
                )
            except ProjectLimitReached as exc:
                raise forms.ValidationError(str(exc))
        return cleaned


@admin.register(Project)
class ProjectAdmin(CustomerSearch, BigTableAdmin):
    """Here rather than in usage/admin.py: saving a project goes through billing's project service."""

    list_display = ("name", "customer", "status", "created_at", "updated_at")
    list_filter = ("status",)
    list_select_related = ("customer",)
    ordering = ("-customer_id", "-created_at")  # the customer index, small sorts per customer
    name_search_fields = ("name",)
    search_help_text = (
        "Part of the project's name (3 characters or more), or the customer's email (exact, any case), "
        "an email prefix, or a customer id."
    )
    raw_id_fields = ("customer",)
    readonly_fields = ("id", "created_at", "updated_at")
    form = ProjectForm

    def get_fields(self, request, obj=None):
        return (
            "customer",
            "name",
            "status",
            "override_reason",
            *(("id", "created_at", "updated_at") if obj else ()),
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.is_superuser = request.user.is_superuser
        return form

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {
            "customer": data["customer"],
            "name": data["name"],
            "status": data["status"],
            "actor": _actor(request),
            "override_reason": data.get("override_reason", ""),
            "is_superuser": request.user.is_superuser,
        }
        saved = project_update(project=obj, **fields) if change else project_create(**fields)
        obj.pk, obj.updated_at = saved.pk, saved.updated_at
        obj._state.adding = False


API_VERSION_UNEXPECTED = "an API version the handlers were not written for: check what it changed"


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    """The inbox. Failed events keep their error; replay one once its cause is fixed."""

    # What support reads first comes first, and every column fits at 1,400 px (the processor and the
    # event id, which support searches by, were two columns past the edge).
    list_display = (
        "received_at_short",
        "event",
        "event_type",
        "status_shown",
        "result",
        "api_version_shown",
    )
    # No event_type filter: on a free-text column it runs a DISTINCT over the whole inbox per load.
    list_filter = ("status", "retry_expected", "processor")
    search_fields = ("=event_id",)
    ordering = ("-id",)  # arrival order by the primary key: no sort of the inbox
    search_help_text = "Exact event id or customer id."

    def get_search_results(self, request, queryset, search_term):
        """A customer id, else an event id (processor, event_id key), each by index: their OR scanned
        the inbox (6 s at 1.7M events, bench/admin.py)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(customer_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(processor__in=WebhookEvent.Processor.values, event_id=term), False

    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
    actions = ("replay_failed",)
    received_at_short = usage_admin.moment("received_at", "received")

    @admin.display(description="processor · event id")
    def event(self, event):
        # Two short lines in one column; not sortable: no index orders the inbox by event id.
        return format_html("{}<br><small>{}</small>", event.get_processor_display(), event.event_id)

    def has_replay_permission(self, request):
        return request.user.has_perm("billing.replay_webhookevent")

    @admin.display(description="status", ordering="status")
    def status_shown(self, event):
        if event.attempts > 1:
            return f"{event.get_status_display()}, after {number(event.attempts)} attempts"
        return event.get_status_display()

    @admin.display(description="error or outcome")
    def result(self, event):
        """The last error of an event that failed, else what applying it did: one column, cut to a line
        or two so every column fits at 1,400 px (the event's page shows both whole)."""
        if not event.error:
            return Truncator(event.outcome).chars(60) or "—"
        error = Truncator(event.error).chars(60)
        if event.retry_expected:  # the processor delivers it again; a person steps in if that never helps
            return f"{error} (waiting for the processor's retry)"
        return error

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
            request,
            f"Replayed {count_of(done, 'event')}; {number(still)} still failing; {number(skipped)} skipped (not failed).",
        )


# --- reconciliation history: usage's pages, with what needs billing's checks (SPEC §7 Roles) ---------


class ReconciliationRunAdmin(usage_admin.ReconciliationRunAdmin):
    """usage's run history, plus the superuser's Reconcile every customer (billing.ops runs it)."""

    def has_reconcile_all_permission(self, request):
        return request.user.has_perm("usage.reconcile_all")

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_reconcile_all": self.has_reconcile_all_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path(
                "reconcile-all/",
                self.admin_site.admin_view(self.reconcile_all_view),
                name="usage_reconciliationrun_reconcile_all",
            ),
            *super().get_urls(),
        ]

    def reconcile_all_view(self, request):
        """A superuser's: every customer, in a background process, batched; progress on its run page."""
        if not self.has_reconcile_all_permission(request):
            raise PermissionDenied
        changelist = reverse("admin:usage_reconciliationrun_changelist")
        if request.method != "POST":
            return TemplateResponse(
                request,
                "admin/usage/reconciliationrun/reconcile_all.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Reconcile every customer",
                    "opts": self.opts,
                },
            )
        try:
            reconcile_all_start(started_by=f"{request.user.get_username()} (admin, every customer)")
        except ReconciliationBusy as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(
                request,
                "Started reconciling every customer in the background, in batches; "
                "its run below shows the progress. Reload to follow it.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(changelist)


class ReconciliationRowAdmin(usage_admin.ReconciliationRowAdmin):
    check_groups = CHECK_GROUPS  # usage's checks and billing's (credit remaining)


for _model, _model_admin in (
    (ReconciliationRun, ReconciliationRunAdmin),
    (ReconciliationRow, ReconciliationRowAdmin),
):
    admin.site.unregister(_model)
    admin.site.register(_model, _model_admin)
