-- Reconciliation's fix of presets (I3): usage_count and last_used_at from preset_usage, for these
-- customers. The caller holds the rows' locks.
-- SECURITY DEFINER, owned by the schema's owner (the role that runs migrate): the counter guard lets
-- its writes through (usage_counter_writes_granted) because it marks its transaction in
-- usage_counter_write_grants, which the app role cannot write. Its search_path is fixed with pg_temp
-- last, so a temporary table of the caller's cannot stand in for projects or usage_events.
CREATE OR REPLACE FUNCTION usage_presets_recount(p_customers uuid[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    mine boolean;
BEGIN
    INSERT INTO usage_counter_write_grants VALUES (pg_current_xact_id()::text::bigint) ON CONFLICT DO NOTHING RETURNING true INTO mine;
    UPDATE presets p SET usage_count = u.n, last_used_at = u.last_used
    FROM (SELECT q.id, count(pu.id) AS n, max(pu.used_at) AS last_used
          FROM presets q LEFT JOIN preset_usage pu ON pu.preset_id = q.id
          WHERE q.customer_id = ANY (p_customers) GROUP BY q.id) u
    WHERE p.id = u.id AND (p.usage_count <> u.n OR p.last_used_at IS DISTINCT FROM u.last_used);
    IF mine THEN
        DELETE FROM usage_counter_write_grants WHERE xact = pg_current_xact_id()::text::bigint;
    END IF;
END;
$$;
