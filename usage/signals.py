"""The Django half of the counter sync. Handlers never count (SPEC §4, I5): the triggers did.

After a write they refresh what Django holds (the counters of a preset instance attached to the use
just written), and after ``migrate`` they warn when an expected trigger or function is missing.
"""

import logging

from django.db import connections
from django.db.models.signals import post_delete, post_migrate, post_save
from django.dispatch import Signal, receiver

from usage.models import Preset, PresetUsage
from usage.selectors import trigger_health

logger = logging.getLogger("usage")


@receiver([post_save, post_delete], sender=PresetUsage, dispatch_uid="usage.refresh_preset_counters")
def refresh_preset_counters(sender, instance, **kwargs):
    preset = instance._state.fields_cache.get("preset")
    if isinstance(preset, Preset) and preset.pk and Preset.objects.filter(pk=preset.pk).exists():
        preset.refresh_from_db(fields=list(Preset.counter_fields))


@receiver(post_migrate, dispatch_uid="usage.warn_missing_triggers")
def warn_missing_triggers(sender, using="default", **kwargs):
    if sender.name != "usage" or connections[using].vendor != "postgresql":
        return
    for status in trigger_health(using=using):
        if not status.ok:
            logger.warning(
                "counter %s %s: %s; counters will drift until it is fixed",
                status.kind,
                status.name,
                status.problem,
            )


# Sent inside the transaction that set counters to their recomputed truth, with the changed rows
# (dicts as the discrepancy report streams them), so a listener's record commits with the fix.
counters_recounted = Signal()
