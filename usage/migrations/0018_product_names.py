"""The product's table and column names (usage/names.py) in the migrations' state only.

The identity (a greenfield install) has nothing to say: no operation. With a mapping, an adopted
database's usage migrations are recorded as applied without running (manage.py adopt), and this one
tells the later migrations (billing's foreign keys to customers) the product's names: the database
is left as it is, its tables already carry those names.
"""

from django.db import migrations

from usage import names

_MODELS = {
    "customers": "customer",
    "projects": "project",
    "presets": "preset",
    "preset_usage": "presetusage",
    "usage_events": "usageevent",
    "usage_tracking": "usagetracking",
}


def _state_operations():
    from usage import models as usage_models

    mapping = names.mapping()
    operations = []
    for table, new in sorted(mapping.tables.items()):
        operations.append(migrations.AlterModelTable(_MODELS[table], new))
    by_table = {
        m._meta.db_table: m for m in usage_models.Customer._meta.apps.get_app_config("usage").get_models()
    }
    for table in sorted(mapping.uuid_ids):
        model = by_table[mapping.table(table)]
        operations.append(migrations.AlterField(_MODELS[table], "id", model._meta.pk.clone()))
    for table, columns in sorted(mapping.columns.items()):
        model = by_table[mapping.table(table)]
        for field in model._meta.concrete_fields:
            if field.get_attname() in columns:
                operations.append(migrations.AlterField(_MODELS[table], field.name, field.clone()))
    return operations


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0017_drift_rows"),
    ]

    operations = [migrations.SeparateDatabaseAndState(state_operations=_state_operations())]
