-- Apply counter deltas to usage_tracking rows, one array element per (customer, period).
-- Rows that exist take their delta in one UPDATE: a scalar one for a single row (the single-row
-- statements of the product), a set-based one for bulk statements. Rows that do not exist yet are
-- created with the true values from the source tables (which already include the calling
-- statement's rows), so they take no delta.
CREATE OR REPLACE FUNCTION usage_tracking_add(
    p_customer uuid[],
    p_period_start timestamptz[],
    p_period_end timestamptz[],
    p_active integer[],
    p_ai numeric[],
    p_minutes numeric[]
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rest_customer uuid[];
    rest_start timestamptz[];
    rest_end timestamptz[];
    rest_active bigint[];
    rest_ai numeric[];
    rest_minutes numeric[];
    created_customer uuid[];
    created_start timestamptz[];
    expected integer;
    updated integer;
BEGIN
    IF p_customer IS NULL THEN
        RETURN;
    END IF;

    IF cardinality(p_customer) = 1 THEN
        UPDATE usage_tracking t
        SET active_projects_count = t.active_projects_count + coalesce(p_active[1], 0),
            ai_interactions_count = t.ai_interactions_count + coalesce(p_ai[1], 0),
            minutes_used = t.minutes_used + coalesce(p_minutes[1], 0),
            updated_at = now()
        WHERE t.customer_id = p_customer[1] AND t.period_start = p_period_start[1];
        IF FOUND THEN
            RETURN;
        END IF;
        rest_customer := p_customer;
        rest_start := p_period_start;
        rest_end := p_period_end;
        rest_active := p_active;
        rest_ai := p_ai;
        rest_minutes := p_minutes;
    ELSE
        -- 1. Lock the existing rows in one global order: concurrent statements cannot deadlock.
        PERFORM 1
        FROM usage_tracking t
        JOIN unnest(p_customer, p_period_start) AS d(customer_id, period_start)
          ON t.customer_id = d.customer_id AND t.period_start = d.period_start
        ORDER BY t.customer_id, t.period_start
        FOR UPDATE OF t;

        -- 2. Existing rows take their delta; collect the (customer, period) pairs that have no row.
        WITH d AS (
            SELECT customer_id, period_start, min(period_end) AS period_end,
                   sum(coalesce(active, 0)) AS active, sum(coalesce(ai, 0)) AS ai,
                   sum(coalesce(minutes, 0)) AS minutes
            FROM unnest(p_customer, p_period_start, p_period_end, p_active, p_ai, p_minutes)
                 AS u(customer_id, period_start, period_end, active, ai, minutes)
            GROUP BY customer_id, period_start
        ), applied AS (
            UPDATE usage_tracking t
            SET active_projects_count = t.active_projects_count + d.active,
                ai_interactions_count = t.ai_interactions_count + d.ai,
                minutes_used = t.minutes_used + d.minutes,
                updated_at = now()
            FROM d
            WHERE t.customer_id = d.customer_id AND t.period_start = d.period_start
            RETURNING t.customer_id, t.period_start
        )
        SELECT array_agg(d.customer_id), array_agg(d.period_start), array_agg(d.period_end),
               array_agg(d.active), array_agg(d.ai), array_agg(d.minutes)
        INTO rest_customer, rest_start, rest_end, rest_active, rest_ai, rest_minutes
        FROM d
        WHERE (d.customer_id, d.period_start) NOT IN (SELECT * FROM applied);

        IF rest_customer IS NULL THEN
            RETURN;
        END IF;
    END IF;

    -- 3. Create the missing rows from the truth. A concurrent creator makes us wait, then skip
    --    (both the unique key and the no-overlap exclusion constraint are arbiters). A period outside
    --    the sane horizon (an event the product dated 9999) is refused: UP001, the statement undone.
    PERFORM usage_period_check(r.period_start, r.period_end)
    FROM unnest(rest_start, rest_end) AS r(period_start, period_end);
    WITH d AS (
        SELECT * FROM unnest(rest_customer, rest_start, rest_end) AS d(customer_id, period_start, period_end)
    ), created AS (
        INSERT INTO usage_tracking AS t (
            customer_id, period_start, period_end, month,
            active_projects_count, ai_interactions_count, minutes_used, updated_at)
        SELECT d.customer_id, d.period_start, d.period_end,
               to_char(d.period_start AT TIME ZONE 'UTC', 'YYYY-MM'),
               CASE WHEN now() >= d.period_start AND now() < d.period_end THEN
                   (SELECT count(*) FROM projects p
                    WHERE p.customer_id = d.customer_id AND p.status = 'active')
               ELSE 0 END,
               coalesce((SELECT sum(e.quantity) FROM usage_events e
                         WHERE e.customer_id = d.customer_id AND e.metric = 'ai_interaction'
                           AND e.occurred_at >= d.period_start AND e.occurred_at < d.period_end), 0),
               coalesce((SELECT sum(e.quantity) FROM usage_events e
                         WHERE e.customer_id = d.customer_id AND e.metric = 'minutes'
                           AND e.occurred_at >= d.period_start AND e.occurred_at < d.period_end), 0),
               now()
        FROM d
        WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = d.customer_id)
        ORDER BY d.customer_id, d.period_start
        ON CONFLICT DO NOTHING
        RETURNING t.customer_id, t.period_start
    )
    SELECT array_agg(customer_id), array_agg(period_start) INTO created_customer, created_start
    FROM created;

    -- 4. Rows a concurrent transaction created while step 3 waited take their delta now, in a new
    --    statement whose snapshot sees them.
    WITH d AS (
        SELECT * FROM unnest(rest_customer, rest_start, rest_active, rest_ai, rest_minutes)
             AS u(customer_id, period_start, active, ai, minutes)
        WHERE (customer_id, period_start) NOT IN (
            SELECT * FROM unnest(coalesce(created_customer, '{}'), coalesce(created_start, '{}')))
          AND EXISTS (SELECT 1 FROM customers c WHERE c.id = u.customer_id)
    ), applied AS (
        UPDATE usage_tracking t
        SET active_projects_count = t.active_projects_count + coalesce(d.active, 0),
            ai_interactions_count = t.ai_interactions_count + coalesce(d.ai, 0),
            minutes_used = t.minutes_used + coalesce(d.minutes, 0),
            updated_at = now()
        FROM d
        WHERE t.customer_id = d.customer_id AND t.period_start = d.period_start
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM applied) INTO expected, updated;

    -- A delta with no row to land on means a concurrent writer opened an overlapping period with
    -- other bounds: fail the statement so the client retries, rather than lose the delta.
    IF updated <> expected THEN
        RAISE EXCEPTION 'usage period of a customer changed concurrently; retry the statement'
            USING ERRCODE = 'serialization_failure';
    END IF;
END;
$$;
