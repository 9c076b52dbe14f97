from django.db import migrations

# The discrepancy scan's scratch rows, in an ordinary table instead of a temporary one: the app role
# holds no TEMPORARY privilege (SPEC §10; a trigger on a temporary table of its own ran its writes at
# trigger depth 1, past the counter guards). Each transaction sees only its own rows through the
# view; the scan deletes its own and finished transactions' rows before it writes.
SQL = """
CREATE UNLOGGED TABLE usage_drift_rows (
    check_name text NOT NULL,
    customer_id uuid NOT NULL,
    target_id text,
    tracked jsonb,
    actual jsonb,
    difference numeric,
    xact bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint
);
CREATE INDEX usage_drift_rows_xact ON usage_drift_rows (xact);
CREATE VIEW usage_drift AS
    SELECT check_name, customer_id, target_id, tracked, actual, difference FROM usage_drift_rows
    WHERE xact = pg_current_xact_id_if_assigned()::text::bigint;
"""


class Migration(migrations.Migration):
    """usage_drift_rows and its per-transaction view usage_drift: the scan's rows without a temp table."""

    dependencies = [("usage", "0016_customers_email_prefix")]

    operations = [
        migrations.RunSQL(SQL, reverse_sql="DROP VIEW usage_drift; DROP TABLE usage_drift_rows;"),
    ]
