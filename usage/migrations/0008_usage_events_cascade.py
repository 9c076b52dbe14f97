from django.db import migrations

# 0006 altered the usage_events -> customers foreign key, so Django's schema editor dropped the key
# 0002 had made cascade and created a plain one (NO ACTION): a raw `DELETE FROM customers` of a
# customer with events then failed at the commit. Frozen here (SPEC §13); idempotent: it only
# replaces a key that does not cascade yet.
CASCADE = """
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT con.conname, a.attname AS col
        FROM pg_constraint con
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
        WHERE con.contype = 'f'
          AND con.conrelid = 'usage_events'::regclass
          AND con.confrelid = 'customers'::regclass
          AND con.confdeltype <> 'c'
    LOOP
        EXECUTE format(
            'ALTER TABLE usage_events DROP CONSTRAINT %I, ADD CONSTRAINT %I FOREIGN KEY (%I) '
            'REFERENCES customers (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED',
            r.conname, r.conname, r.col);
    END LOOP;
END;
$$;
"""


class Migration(migrations.Migration):
    """usage_events' foreign key cascades again at the database level, as 0002 intends."""

    dependencies = [("usage", "0007_usage_events_one_row_fast_path")]

    operations = [migrations.RunSQL(CASCADE, reverse_sql=migrations.RunSQL.noop)]
