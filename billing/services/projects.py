"""Projects under the plan's active-projects limit (SPEC §5 S8, §7 Support).

Every way a project becomes active for a customer goes through here: creating one, un-archiving one,
moving one to another customer. The check and the write happen under the lock of that customer's
current-period row (the same lock consume takes), so two of them at the limit cannot both pass. The
count is of the projects themselves: archiving or deleting one frees the quota at once, whatever the
counter says. Past the limit only a superuser may go, with a reason, and the override is audited.
"""

from django.db import connection, transaction
from django.db.models import Q

from billing.models import AuditLog, Plan
from billing.selectors import customer_plan
from billing.services.audit import audit_record, reason_too_long
from usage.models import Customer, Project

AT_LIMIT = (
    "Cannot {verb}: {active} of {limit} active projects on {plan}. "
    "Archive or delete a project, or upgrade{upgrade}."
)
VERB_CREATE = "create a project"
VERB_UNARCHIVE = "un-archive the project"
VERB_MOVE = "move the project to {email}"
OVERRIDE_HINT = " A superuser can override with a reason."
OVERRIDE_NEEDS_SUPERUSER = "Only a superuser can go past a plan's project limit."
NEEDS_NAME = "a project needs a name"


class ProjectLimitReached(Exception):
    pass


def project_limit_check(
    *, customer: Customer, verb: str = VERB_CREATE, override_reason: str = "", is_superuser: bool = False
) -> str:
    """Lock the customer's period row and check one more active project fits.

    Returns "" when it fits, the refusal text when a superuser overrides it with a reason (for the
    audit), and raises ProjectLimitReached otherwise. Call it inside the transaction that writes.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM billing_period_lock(%s)", [customer.pk])
    plan = customer_plan(customer)
    limit = plan.max_active_projects if plan else None
    if plan is None or limit is None:
        return ""
    active = Project.objects.filter(customer=customer, status=Project.Status.ACTIVE).count()
    if active < limit:
        return ""
    bigger = (
        Plan.objects.filter(Q(max_active_projects__gt=limit) | Q(max_active_projects__isnull=True))
        .order_by("price")
        .first()
    )
    upgrade = f" to {bigger.name} ({bigger.max_active_projects or 'unlimited'})" if bigger else ""
    refusal = AT_LIMIT.format(verb=verb, active=active, limit=limit, plan=plan.name, upgrade=upgrade)
    if too_long := reason_too_long(override_reason):
        raise ProjectLimitReached(f"{refusal} Not overridden: {too_long}.")
    if not override_reason.strip():
        raise ProjectLimitReached(refusal + (OVERRIDE_HINT if is_superuser else ""))
    if not is_superuser:
        raise ProjectLimitReached(f"{refusal} {OVERRIDE_NEEDS_SUPERUSER}")
    return refusal


def _audit_override(*, project: Project, refusal: str, actor: str, reason: str) -> None:
    audit_record(
        actor=actor,
        action=AuditLog.Action.PROJECT_LIMIT_OVERRIDE,
        target_type="project",
        target_id=project.pk,
        customer_id=project.customer_id,
        after={"project": project.name, "status": project.status},
        reason=f"OVERRIDE ({refusal}): {reason.strip()}",
    )


@transaction.atomic
def project_create(
    *,
    customer: Customer,
    name: str,
    status: str = Project.Status.ACTIVE,
    actor: str = "",
    override_reason: str = "",
    is_superuser: bool = False,
) -> Project:
    name = (name or "").strip()
    if not name:
        raise ValueError(NEEDS_NAME)
    refusal = ""
    if status == Project.Status.ACTIVE:
        refusal = project_limit_check(
            customer=customer, override_reason=override_reason, is_superuser=is_superuser
        )
    project = Project.objects.create(customer=customer, name=name, status=status)
    if refusal:
        _audit_override(project=project, refusal=refusal, actor=actor, reason=override_reason)
    return project


def project_change_verb(*, project: Project, customer: Customer, status: str) -> str | None:
    """What the change does to the limit: the verb of a check to run, or None when it adds nothing.

    ``project`` is as stored; ``customer`` and ``status`` are what it becomes.
    """
    if status != Project.Status.ACTIVE:
        return None
    if customer.pk != project.customer_id:
        return VERB_MOVE.format(email=customer.email)
    if project.status != Project.Status.ACTIVE:
        return VERB_UNARCHIVE
    return None


@transaction.atomic
def project_update(
    *,
    project: Project,
    name: str,
    status: str,
    customer: Customer,
    actor: str = "",
    override_reason: str = "",
    is_superuser: bool = False,
) -> Project:
    """Rename, archive, un-archive or move a project; becoming active for a customer checks its limit."""
    name = (name or "").strip()
    if not name:
        raise ValueError(NEEDS_NAME)
    stored = Project.objects.select_for_update().get(pk=project.pk)
    verb = project_change_verb(project=stored, customer=customer, status=status)
    refusal = ""
    if verb:
        refusal = project_limit_check(
            customer=customer, verb=verb, override_reason=override_reason, is_superuser=is_superuser
        )
    stored.name, stored.status, stored.customer = name, status, customer
    stored.save(update_fields=["name", "status", "customer", "updated_at"])
    if refusal:
        _audit_override(project=stored, refusal=refusal, actor=actor, reason=override_reason)
    return stored
