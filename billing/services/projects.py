"""Project creation under the plan's active-projects limit (SPEC §5, S8).

The check and the insert happen under the lock of the customer's current-period row (the same lock
consume takes), so two creations at the limit cannot both pass. The count is of the projects
themselves: archiving or deleting one frees the quota at once, whatever the counter says.
"""

from django.db import connection, transaction
from django.db.models import Q

from billing.models import Plan
from billing.selectors import customer_plan
from usage.models import Customer, Project

AT_LIMIT = (
    "Cannot create a project: {active} of {limit} active projects on {plan}. "
    "Archive or delete a project, or upgrade{upgrade}."
)


class ProjectLimitReached(Exception):
    pass


def project_create(*, customer: Customer, name: str) -> Project:
    name = (name or "").strip()
    if not name:
        raise ValueError("a project needs a name")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM billing_period_lock(%s)", [customer.pk])
        plan = customer_plan(customer)
        limit = plan.max_active_projects if plan else None
        if plan is not None and limit is not None:
            active = Project.objects.filter(customer=customer, status=Project.Status.ACTIVE).count()
            if active >= limit:
                bigger = (
                    Plan.objects.filter(
                        Q(max_active_projects__gt=limit) | Q(max_active_projects__isnull=True)
                    )
                    .order_by("price")
                    .first()
                )
                upgrade = f" to {bigger.name} ({bigger.max_active_projects or 'unlimited'})" if bigger else ""
                raise ProjectLimitReached(
                    AT_LIMIT.format(active=active, limit=limit, plan=plan.name, upgrade=upgrade)
                )
        return Project.objects.create(customer=customer, name=name)
