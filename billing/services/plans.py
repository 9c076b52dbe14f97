"""Plan changes (SPEC §5): validate against the target plan's limits, then change, audited.

A downgrade is blocked while a gauge (active projects, counted from the projects themselves, not from a
counter that may drift) exceeds the target plan's limit, with the exact remedy. Metered usage already
above the target's allowance is a warning: it was used under the current plan. Upgrades always pass.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing.models import AuditLog, Plan, Subscription
from billing.selectors import customer_plan, live_subscription, plan_allowance
from billing.services.audit import audit_record, reason_too_long
from usage.metrics import METERED
from usage.models import Customer, Project, UsageEvent
from usage.numbers import number
from usage.text import echo

BLOCK_ACTIVE_PROJECTS = "Archive {excess} project{s} before moving to {plan}: it allows {limit}, the customer has {active} active."
WARN_METERED = (
    "{metric} this period: {used} used, above {plan}'s allowance of {allowance}; "
    "the change is allowed, and {plan}'s limit applies from now on."
)
SAME_PLAN = "The customer is already on {plan}."
OVERRIDE_NEEDS_SUPERUSER = "Only a superuser can override a blocked plan change."
OVERRIDE_NEEDS_REASON = "Overriding a blocked plan change needs a reason."
UNKNOWN_PLAN = "no plan {code}; plans are: {codes}"


@dataclass
class PlanChangeValidation:
    customer: Customer
    current: Plan | None
    target: Plan
    direction: str  # "upgrade", "downgrade" or "same"
    blocks: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.blocks

    def as_dict(self) -> dict:
        return {
            "customer": self.customer.email,
            "customer_id": str(self.customer.pk),
            "from": self.current.code if self.current else None,
            "to": self.target.code,
            "direction": self.direction,
            "allowed": self.allowed,
            "blocks": self.blocks,
            "warnings": self.warnings,
        }


class PlanChangeBlocked(Exception):
    pass


def plan_resolve(code: str) -> Plan:
    """The plan with this code (any case, spaces around ignored); ValueError naming the plans if none.

    Matched among the plans (a handful) rather than sent to the database: any text, a NUL byte
    included, gets the same answer."""
    plans = list(Plan.objects.order_by("price"))
    wanted = str(code or "").strip().lower()
    plan = next((p for p in plans if p.code == wanted), None)
    if plan is None:
        raise ValueError(UNKNOWN_PLAN.format(code=echo(code), codes=", ".join(p.code for p in plans)))
    return plan


def _direction(current: Plan | None, target: Plan) -> str:
    if current is not None and current.pk == target.pk:
        return "same"
    if current is None or target.price > current.price:
        return "upgrade"
    return "downgrade"


def plan_change_validate(*, customer: Customer, target: Plan) -> PlanChangeValidation:
    current = customer_plan(customer)
    result = PlanChangeValidation(customer, current, target, _direction(current, target))
    if result.direction == "same":
        result.warnings.append(SAME_PLAN.format(plan=target.name))
        return result
    if result.direction == "upgrade":
        return result

    active = Project.objects.filter(customer=customer, status=Project.Status.ACTIVE).count()
    limit = target.max_active_projects
    if limit is not None and active > limit:
        excess = active - limit
        result.blocks.append(
            BLOCK_ACTIVE_PROJECTS.format(
                excess=number(excess),
                s="" if excess == 1 else "s",
                plan=target.name,
                limit=number(limit),
                active=number(active),
            )
        )

    start, end = customer.current_period_start, customer.current_period_end
    for metric in METERED:
        allowance = plan_allowance(target, metric)
        if allowance is None:
            continue
        used = UsageEvent.objects.filter(
            customer=customer, metric=metric.code, occurred_at__gte=start, occurred_at__lt=end
        ).aggregate(used=Sum("quantity"))["used"] or Decimal(0)
        if used > allowance:
            result.warnings.append(
                WARN_METERED.format(
                    metric=metric.title, used=number(used), plan=target.name, allowance=number(allowance)
                )
            )
    return result


@transaction.atomic
def subscription_change_plan(
    *, customer: Customer, target: Plan, actor: str, override_reason: str = "", is_superuser: bool = False
) -> PlanChangeValidation:
    """Move the customer to ``target``; refused while blocked unless a superuser overrides with a reason."""
    validation = plan_change_validate(customer=customer, target=target)
    if validation.direction == "same":
        return validation
    if not validation.allowed:
        if too_long := reason_too_long(override_reason):
            raise PlanChangeBlocked(too_long)
        if not override_reason.strip():
            raise PlanChangeBlocked(
                " ".join(validation.blocks) + (" " + OVERRIDE_NEEDS_REASON if is_superuser else "")
            )
        if not is_superuser:
            raise PlanChangeBlocked(OVERRIDE_NEEDS_SUPERUSER)
    subscription = live_subscription(customer)
    before = {"plan": validation.current.code if validation.current else None}
    if subscription is None:
        subscription = Subscription.objects.create(
            customer=customer,
            plan=target,
            processor=Subscription.Processor.MANUAL,
            current_period_start=customer.current_period_start,
            current_period_end=customer.current_period_end,
        )
    else:
        Subscription.objects.filter(pk=subscription.pk).update(plan=target, updated_at=timezone.now())
    reason = override_reason.strip() or f"{validation.direction} validated"
    if not validation.allowed:
        reason = f"OVERRIDE of a blocked {validation.direction} ({' '.join(validation.blocks)}): {reason}"
    audit_record(
        actor=actor,
        action=AuditLog.Action.PLAN_CHANGE,
        target_type="subscription",
        target_id=subscription.pk,
        customer_id=customer.pk,
        before=before,
        after={"plan": target.code, "warnings": validation.warnings},
        reason=reason,
    )
    return validation
