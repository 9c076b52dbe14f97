from django.db import migrations
from django.db.migrations.exceptions import IrreversibleError

REFUSED = (
    "this database was adopted (manage.py adopt): customers, projects, presets, preset_usage, usage_events "
    "and usage_tracking are the product's tables, and migrating usage backwards would drop them. "
    "Run `manage.py adopt --uninstall` to take billing-ops out instead."
)


def refuse_when_adopted(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('billing_ops_adoption') IS NOT NULL")
        if cursor.fetchone()[0]:
            raise IrreversibleError(REFUSED)


class Migration(migrations.Migration):
    """No backward migration drops an adopted product's tables (SPEC §2): unapplying stops here."""

    dependencies = [("usage", "0008_usage_events_cascade")]

    operations = [migrations.RunPython(migrations.RunPython.noop, reverse_code=refuse_when_adopted)]
