from pathlib import Path

from django.db import migrations, models

SQL = Path(__file__).resolve().parent / "sql"


class Migration(migrations.Migration):
    """The table that marks a transaction allowed to write counters directly: only the schema's owner
    writes it, inside its SECURITY DEFINER recount functions (usage/sql/usage_counter_writes_granted.sql).
    It replaces the billing_ops.recount setting, which any client could set."""

    dependencies = [("usage", "0011_usage_tracking_finance_indexes")]

    operations = [
        migrations.CreateModel(
            name="CounterWriteGrant",
            fields=[
                (
                    "xact",
                    models.BigIntegerField(
                        help_text="pg_current_xact_id() of the transaction.",
                        primary_key=True,
                        serialize=False,
                    ),
                ),
            ],
            options={"db_table": "usage_counter_write_grants"},
        ),
        migrations.RunSQL(
            (SQL / "0012_counter_write_grants.sql").read_text(), reverse_sql=migrations.RunSQL.noop
        ),
    ]
