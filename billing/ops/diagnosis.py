"""One customer's diagnosis (SPEC §6): what support needs on one page, and the fix to run."""

from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.db.models import Subquery, Sum
from django.utils.text import capfirst

from billing.models import AuditLog, CreditDraw, CreditGrant, WebhookEvent
from billing.ops.checks import drift_scan
from billing.ops.findings import findings
from billing.selectors import customer_plan, live_subscription, plan_allowance
from billing.services.audit import audit_changes
from usage.metrics import BY_CHECK as METRICS_BY_CHECK
from usage.metrics import METRICS, metric_label
from usage.models import ReconciliationRow
from usage.numbers import number_plain

# Every check, in the order the page shows them: the catalogue's metrics first, by their labels.
COUNTER_LABELS = {
    **{metric.check: metric.label for metric in METRICS},
    "preset_usage_count": "preset uses",
    "preset_last_used_at": "preset last used",
    "credit_remaining": "credit remaining",
}


@dataclass
class CounterLine:
    check: str
    label: str
    target_id: str | None
    tracked: object
    actual: object
    difference: object
    allowance: object = None
    left: object = None
    from_credit: object = None  # metered usage past the allowance that overage credit paid for

    @property
    def drifted(self) -> bool:
        return self.tracked != self.actual

    @property
    def over_unpaid(self):
        """How far past the allowance and the credit it drew (None when credit paid for all of it): the
        over-limit finding's rule, so S5's 620 of 600 minutes with 20 from credit is not "over by 20"."""
        if self.over is None:
            return None
        unpaid = Decimal(self.over) - Decimal(self.from_credit or 0)
        return number_plain(unpaid) if unpaid > 0 else None

    @property
    def over(self):
        """How far the true value is past the allowance (None when within it): "left" is never negative.

        ``left`` is number_plain's (an int, or a fraction as exact text: "47.5"), so compared as a Decimal."""
        if self.left is None or Decimal(self.left) >= 0:
            return None
        return number_plain(-Decimal(self.left))


@dataclass
class Diagnosis:
    customer: object
    plan: object
    subscription: object
    period: object
    counters: list
    findings: list
    runs: list
    audit: list = field(default_factory=list)
    fixes: list = field(default_factory=list)
    credits: list = field(default_factory=list)
    webhooks: list = field(default_factory=list)

    @property
    def drifted(self) -> list:
        return [c for c in self.counters if c.drifted]

    def as_dict(self) -> dict:
        c, s = self.customer, self.subscription
        return {
            "customer": {"id": str(c.pk), "email": c.email, "name": c.name},
            "plan": self.plan.code if self.plan else None,
            "subscription": None
            if s is None
            else {
                "status": s.status,
                "processor": s.processor,
                "external_id": s.external_subscription_id,
                "period_start": s.current_period_start.isoformat(),
                "period_end": s.current_period_end.isoformat(),
            },
            "period": {"start": c.current_period_start.isoformat(), "end": c.current_period_end.isoformat()},
            "counters": [
                {
                    "check": x.check,
                    "label": x.label,
                    "target_id": x.target_id,
                    "tracked": x.tracked,
                    "actual": x.actual,
                    "difference": x.difference,
                    "allowance": x.allowance,
                    "left": x.left,
                    "drifted": x.drifted,
                }
                for x in self.counters
            ],
            "findings": [f.as_dict() for f in self.findings],
            "recent_runs": [
                {
                    "run": r.run_id,
                    "check": r.check_name,
                    "tracked": r.tracked,
                    "actual": r.actual,
                    "fixed": r.fixed,
                    "at": r.run.started_at.isoformat(),
                    "by": r.run.started_by,
                }
                for r in self.runs
            ],
            "audit": [
                {
                    "at": a.at.isoformat(),
                    "actor": a.actor,
                    "action": a.action,
                    "before": a.before,
                    "after": a.after,
                    "reason": a.reason,
                }
                for a in self.audit
            ],
            "fixes": self.fixes,
            "credits": [
                {
                    "id": str(g.pk),
                    "metric": g.metric,
                    "granted": str(g.granted),
                    "remaining": str(g.remaining),
                    "source": g.source,
                    "expires_at": g.expires_at.isoformat() if g.expires_at else None,
                }
                for g in self.credits
            ],
            "webhooks": [
                {
                    "received_at": w.received_at.isoformat(),
                    "processor": w.processor,
                    "type": w.event_type,
                    "event_id": w.event_id,
                    "status": w.status,
                    "outcome": w.outcome,
                    "error": w.error,
                }
                for w in self.webhooks
            ],
        }


def _credits_with_period_draws(customer) -> list:
    """The customer's latest grants, each row also carrying what usage drew from credit this period per
    metered metric (uncorrelated subqueries, the same on every row): no query of its own, so the page
    stays within its query budget. A customer with no grant drew nothing."""

    def drawn(metric: str):
        return Subquery(
            CreditDraw.objects.filter(
                customer_id=customer.pk,
                kind=CreditDraw.Kind.USAGE,
                drawn_at__gte=customer.current_period_start,
                drawn_at__lt=customer.current_period_end,
                grant__metric=metric,
            )
            .values("customer_id")
            .annotate(total=Sum("quantity"))
            .values("total")
        )

    grants = CreditGrant.objects.filter(customer=customer).annotate(
        **{f"period_drawn_{m.code}": drawn(m.code) for m in METRICS if m.metered}
    )
    return list(grants.order_by("-created_at")[:10])


def _credit_paid(counters: list[CounterLine], credits: list) -> None:
    """On each metered line past its allowance, the credit that metric drew this period."""
    if not credits:
        return
    for line in counters:
        metric = METRICS_BY_CHECK.get(line.check)
        if metric and metric.metered and line.over is not None:
            total = getattr(credits[0], f"period_drawn_{metric.code}")
            line.from_credit = number_plain(total) if total is not None else None


def _name_credit_lines(counters: list[CounterLine], credits: list) -> None:
    """Each grant's "credit remaining" line says which grant it is ("credit remaining: transcription
    minutes, purchased 2026-12-05"), not the same words on every line. The grants shown below cover the
    usual case; the rest are read in one query."""
    lines = [line for line in counters if line.check == "credit_remaining" and line.target_id]
    grants = {str(g.pk): g for g in credits}
    missing = [line.target_id for line in lines if str(line.target_id) not in grants]
    if missing:
        grants.update((str(g.pk), g) for g in CreditGrant.objects.filter(pk__in=missing))
    for line in lines:
        grant = grants.get(str(line.target_id))
        if grant is not None:
            when = f"{grant.created_at:%Y-%m-%d}"
            line.label = f"{line.label}: {metric_label(grant.metric)}, {source_words(grant)} {when}"


def source_words(grant) -> str:
    """Where a grant came from, in words: "purchased" (a paid pack), "goodwill" (support)."""
    return "purchased" if grant.source == CreditGrant.Source.PURCHASE else grant.source


def customer_diagnose(*, customer, plans=None, trigger_health: bool = True) -> Diagnosis:
    """Plan, period, every counter beside its truth, allowance left, findings, history, the fix.

    ``plans``: the plan catalogue when the caller has it loaded (one query less). ``trigger_health``:
    include the (global) trigger-health findings; the admin's customer page leaves them to the
    dashboard, which shows them on every page load of the index.
    """
    subscription = live_subscription(customer)
    plan = customer_plan(customer, subscription=subscription, plans=plans)
    # Inside a caller's transaction, no savepoint (two statements less); alone, its own transaction.
    with transaction.atomic(savepoint=False):
        rows = drift_scan([customer.pk], everything=True).take_rows()  # its rows go: nothing stays written
    # The current period's row is the one the active-projects check compares (None: no row yet).
    current = next((r["target_id"] for r in rows if r["check"] == "active_projects"), None)
    counters = []
    for row in sorted(rows, key=lambda r: (list(COUNTER_LABELS).index(r["check"]), str(r["target_id"]))):
        # Metered counters: the current period's row only; earlier periods are history.
        history = current and row["target_id"] not in (None, current)
        metric = METRICS_BY_CHECK.get(row["check"])
        if metric and metric.metered and history and row["tracked"] == row["actual"]:
            continue
        line = CounterLine(
            row["check"],
            COUNTER_LABELS[row["check"]],
            row["target_id"],
            row["tracked"],
            row["actual"],
            row["difference"],
        )
        if plan and metric and (current is None or row["target_id"] in (None, current)):
            line.allowance = plan_allowance(plan, metric)
            if line.allowance is not None and isinstance(line.actual, (int, str)):
                # actual is number_plain's: an int, or a fraction as exact decimal text
                line.left = number_plain(Decimal(line.allowance) - Decimal(line.actual))
        counters.append(line)
    found = findings([customer.pk], skip=() if trigger_health else ("trigger_health",))
    runs = list(
        ReconciliationRow.objects.select_related("run")
        .filter(customer_id=customer.pk)
        .order_by("-run__started_at")[:10]
    )
    for row in runs:
        row.label = COUNTER_LABELS.get(row.check_name, row.check_name)
    audit = list(AuditLog.objects.filter(customer_id=customer.pk)[:10])
    for entry in audit:
        entry.changes = audit_changes(entry.before, entry.after, COUNTER_LABELS)
    diagnosis = Diagnosis(customer, plan, subscription, current, counters, found, runs, audit)
    diagnosis.credits = _credits_with_period_draws(customer)
    _name_credit_lines(counters, diagnosis.credits)
    for grant in diagnosis.credits:
        grant.source_words = source_words(grant)
    _credit_paid(counters, diagnosis.credits)
    diagnosis.webhooks = list(WebhookEvent.objects.filter(customer_id=customer.pk)[:10])
    if diagnosis.drifted:
        diagnosis.fixes.append(
            f"Recount: the Recount button on this customer's admin page, or "
            f"manage.py reconcile_usage --apply --customer {customer.email}"
        )
    diagnosis.fixes.extend(f"{capfirst(f.label)}: {f.fix}" for f in found if f.fix)
    return diagnosis
