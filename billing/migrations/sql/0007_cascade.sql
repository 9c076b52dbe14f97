-- Customers deleted in raw SQL take their billing rows with them (SPEC §10), and a grant its draws.
--
-- The same loop as the end of 0005_billing.sql, which ran before Django created that migration's
-- foreign keys (the schema editor adds them after the last operation), so credit_grants,
-- credit_draws and consume_requests kept NO ACTION and such a DELETE failed. Idempotent: a key that
-- already cascades is recreated as it is.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT con.conname, con.conrelid::regclass AS tbl, a.attname AS col, con.confrelid::regclass AS ref
        FROM pg_constraint con
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
        WHERE con.contype = 'f'
          AND con.conrelid::regclass::text IN ('subscriptions', 'credit_grants', 'credit_draws', 'consume_requests')
          AND con.confrelid::regclass::text IN ('customers', 'credit_grants')
    LOOP
        EXECUTE format(
            'ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %s (id) '
            'ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED',
            r.tbl, r.conname, r.conname, r.col, r.ref);
    END LOOP;
END;
$$;
