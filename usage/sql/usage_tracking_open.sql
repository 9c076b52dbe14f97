-- Opening a usage period row outside a trigger (billing's rollover and consume call this).
--
-- The row is created from the source tables' truth, like usage_tracking_add does for triggers: the
-- gauge carries the live count of active projects, metered counters start from the events already in
-- the period (0 unless late events came first).
-- SECURITY DEFINER, owned by the schema's owner (the role that runs migrate): the counter guard lets
-- its writes through (usage_counter_writes_granted) because it marks its transaction in
-- usage_counter_write_grants, which the app role cannot write. Its search_path is fixed with pg_temp
-- last, so a temporary table of the caller's cannot stand in for projects or usage_events.
-- The app role may call it with any bounds: a period outside the sane horizon (usage_period_check,
-- generated from usage/horizon.py) is refused with SQLSTATE UP001 and nothing written.
CREATE OR REPLACE FUNCTION usage_tracking_open(p_customer uuid, p_period_start timestamptz, p_period_end timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    mine boolean;
BEGIN
    PERFORM usage_period_check(p_period_start, p_period_end);
    INSERT INTO usage_counter_write_grants VALUES (pg_current_xact_id()::text::bigint) ON CONFLICT DO NOTHING RETURNING true INTO mine;
    INSERT INTO usage_tracking AS t (
        customer_id, period_start, period_end, month,
        active_projects_count, ai_interactions_count, minutes_used, updated_at)
    SELECT p_customer, p_period_start, p_period_end, to_char(p_period_start AT TIME ZONE 'UTC', 'YYYY-MM'),
           (SELECT count(*) FROM projects p WHERE p.customer_id = p_customer AND p.status = 'active'),
           coalesce(sum(e.quantity) FILTER (WHERE e.metric = 'ai_interaction'), 0),
           coalesce(sum(e.quantity) FILTER (WHERE e.metric = 'minutes'), 0),
           now()
    FROM usage_events e
    WHERE e.customer_id = p_customer AND e.occurred_at >= p_period_start AND e.occurred_at < p_period_end
    ON CONFLICT DO NOTHING;
    IF mine THEN
        DELETE FROM usage_counter_write_grants WHERE xact = pg_current_xact_id()::text::bigint;
    END IF;
END;
$$;
