-- Opening a usage period row outside a trigger (billing's rollover and consume call this).
--
-- The row is created from the source tables' truth, like usage_tracking_add does for triggers: the
-- gauge carries the live count of active projects, metered counters start from the events already in
-- the period (0 unless late events came first). The counter guard allows it for this statement only:
-- the previous value of billing_ops.recount is restored before returning.
CREATE OR REPLACE FUNCTION usage_tracking_open(p_customer uuid, p_period_start timestamptz, p_period_end timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    prior text := coalesce(current_setting('billing_ops.recount', true), 'off');
BEGIN
    PERFORM set_config('billing_ops.recount', 'on', true);
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
    PERFORM set_config('billing_ops.recount', prior, true);
END;
$$;
