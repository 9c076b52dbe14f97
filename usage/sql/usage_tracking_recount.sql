-- Reconciliation's fix of usage_tracking (I1, I2): every counter of these customers set to the truth
-- recomputed here from projects and usage_events, and the rows that are missing opened from it. The
-- caller holds the rows' locks (reconciliation locks them before it re-checks).
-- SECURITY DEFINER, owned by the schema's owner (the role that runs migrate): the counter guard lets
-- its writes through (usage_counter_writes_granted) because it marks its transaction in
-- usage_counter_write_grants, which the app role cannot write. Its search_path is fixed with pg_temp
-- last, so a temporary table of the caller's cannot stand in for projects or usage_events.
CREATE OR REPLACE FUNCTION usage_tracking_recount(p_customers uuid[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    mine boolean;
BEGIN
    INSERT INTO usage_counter_write_grants VALUES (pg_current_xact_id()::text::bigint) ON CONFLICT DO NOTHING RETURNING true INTO mine;
    -- The gauge of the current period row.
    UPDATE usage_tracking t SET active_projects_count = a.n, updated_at = now()
    FROM (SELECT c.id, (SELECT count(*) FROM projects p WHERE p.customer_id = c.id AND p.status = 'active') AS n
          FROM unnest(p_customers) AS c(id)) a
    WHERE t.customer_id = a.id AND usage_period_current(t.period_start, t.period_end)
      AND t.active_projects_count <> a.n;
    -- Metered counters of every period row: the events inside it.
    UPDATE usage_tracking t SET ai_interactions_count = s.ai, minutes_used = s.minutes, updated_at = now()
    FROM (SELECT r.id,
                 coalesce(sum(e.quantity) FILTER (WHERE e.metric = 'ai_interaction'), 0) AS ai,
                 coalesce(sum(e.quantity) FILTER (WHERE e.metric = 'minutes'), 0) AS minutes
          FROM usage_tracking r
          LEFT JOIN usage_events e
                 ON e.customer_id = r.customer_id AND e.occurred_at >= r.period_start AND e.occurred_at < r.period_end
          WHERE r.customer_id = ANY (p_customers)
          GROUP BY r.id) s
    WHERE t.id = s.id AND (t.ai_interactions_count <> s.ai OR t.minutes_used <> s.minutes);
    -- Active projects and no current period row: open it (created from the truth).
    PERFORM usage_tracking_add_active(array_agg(m.id ORDER BY m.id), array_fill(0, ARRAY[count(*)::int]))
    FROM (SELECT DISTINCT p.customer_id AS id FROM projects p
          WHERE p.customer_id = ANY (p_customers) AND p.status = 'active'
            AND NOT EXISTS (SELECT 1 FROM usage_tracking t WHERE t.customer_id = p.customer_id
                            AND usage_period_current(t.period_start, t.period_end))) m
    HAVING count(*) > 0;
    -- Events outside every period row: open their periods (created from the truth).
    PERFORM usage_tracking_add(array_agg(m.customer_id ORDER BY m.customer_id, m.period_start),
                               array_agg(m.period_start ORDER BY m.customer_id, m.period_start),
                               array_agg(m.period_end ORDER BY m.customer_id, m.period_start), NULL, NULL, NULL)
    FROM (SELECT DISTINCT e.customer_id, p.period_start, p.period_end FROM usage_events e
          CROSS JOIN LATERAL usage_period_at(e.customer_id, e.occurred_at) p
          WHERE e.customer_id = ANY (p_customers)
            AND NOT EXISTS (SELECT 1 FROM usage_tracking t WHERE t.customer_id = e.customer_id
                            AND e.occurred_at >= t.period_start AND e.occurred_at < t.period_end)) m
    HAVING count(*) > 0;
    IF mine THEN
        DELETE FROM usage_counter_write_grants WHERE xact = pg_current_xact_id()::text::bigint;
    END IF;
END;
$$;
