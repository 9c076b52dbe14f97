"""After ``migrate``: install the current definitions of billing's SQL functions, then warn when any
expected trigger or function (usage's or billing's) is missing or differs (SPEC §4, §13).

Registered after usage's handlers (INSTALLED_APPS order), so the warning sees both apps' functions.
"""

import logging

from django.db import connections
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from billing.ops.checks import trigger_health
from billing.selectors import sql_definitions
from usage.sql_functions import fully_migrated, sql_functions_install

logger = logging.getLogger("billing")


@receiver(post_migrate, dispatch_uid="billing.install_sql_functions")
def install_sql_functions(sender, using="default", plan=None, **kwargs):
    if sender.name != "billing" or plan is None or connections[using].vendor != "postgresql":
        return
    if not fully_migrated(using):
        return
    for name in sql_functions_install(sql_definitions(), using=using):
        logger.info("installed the current definition of SQL function %s", name)
    for status in trigger_health(using=using):
        if not status.ok:
            logger.warning(
                "counter %s %s: %s; counters will drift until it is fixed",
                status.kind,
                status.name,
                status.problem,
            )
