"""The Django half of the counter sync. Handlers never count (SPEC §4, I5): the triggers did.

After a write they refresh what Django holds (the counters of a preset instance attached to the use
just written), and after ``migrate`` they install the current definitions of usage's SQL functions.
"""

import logging

from django.db import connections
from django.db.models.signals import post_delete, post_migrate, post_save
from django.dispatch import receiver

from usage.models import Preset, PresetUsage
from usage.selectors import sql_definitions
from usage.sql_functions import fully_migrated, sql_functions_install

logger = logging.getLogger("usage")


@receiver([post_save, post_delete], sender=PresetUsage, dispatch_uid="usage.refresh_preset_counters")
def refresh_preset_counters(sender, instance, **kwargs):
    preset = instance._state.fields_cache.get("preset")
    if isinstance(preset, Preset) and preset.pk and Preset.objects.filter(pk=preset.pk).exists():
        preset.refresh_from_db(fields=list(Preset.counter_fields))


@receiver(post_migrate, dispatch_uid="usage.install_sql_functions")
def install_sql_functions(sender, using="default", plan=None, **kwargs):
    """After ``migrate`` (not ``flush``, which passes no plan), on a fully migrated database."""
    if sender.name != "usage" or plan is None or connections[using].vendor != "postgresql":
        return
    if fully_migrated(using):
        for name in sql_functions_install(sql_definitions(), using=using):
            logger.info("installed the current definition of SQL function %s", name)
