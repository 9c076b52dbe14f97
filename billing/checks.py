"""``manage.py check --database default`` (and migrate's pre-check) report unhealthy counter triggers."""

from django.core.checks import Tags, Warning, register
from django.db import connections
from django.db.migrations.executor import MigrationExecutor


@register(Tags.database)
def counter_triggers_installed(app_configs, databases=None, **kwargs):
    from billing.ops.checks import trigger_health

    warnings = []
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            continue  # migrate is about to install them
        for status in trigger_health(using=alias):
            if not status.ok:
                warnings.append(
                    Warning(
                        f"Counter {status.kind} {status.name}: {status.problem}.",
                        hint="Counters drift until it is fixed: run `manage.py migrate`, then `manage.py check_triggers`.",
                        id="usage.W001",
                    )
                )
    return warnings
