-- The product deletes customers (and presets) in raw SQL too: their rows go with them at the
-- database level, so the counter triggers see those deletes like any other.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT con.conname, con.conrelid::regclass AS tbl, a.attname AS col, con.confrelid::regclass AS ref
        FROM pg_constraint con
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
        WHERE con.contype = 'f'
          AND con.conrelid::regclass::text IN ('projects', 'presets', 'preset_usage', 'usage_events', 'usage_tracking')
          AND con.confrelid::regclass::text IN ('customers', 'presets')
    LOOP
        EXECUTE format(
            'ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %s (id) '
            'ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED',
            r.tbl, r.conname, r.conname, r.col, r.ref);
    END LOOP;
END;
$$;
