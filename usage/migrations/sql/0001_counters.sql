-- Counter maintenance shared by the statement-level triggers of usage/triggers.py.
--
-- The triggers aggregate each statement's transition tables into one delta per counter row and hand
-- the deltas to these functions, so a bulk statement costs a few set-based statements, not one upsert
-- per row, and the cost of a row never depends on how many rows the customer already has.
--
-- Concurrency (READ COMMITTED): counters move by deltas (n = n + d) on rows locked in a fixed order,
-- never by "count then overwrite", which loses concurrent increments. A missing row is created from
-- the source tables' truth; a writer that loses the race to create it waits on the unique index and
-- then adds its delta in a later statement, with a fresh snapshot.
--
-- Functions named usage_<table>_<verb>; every one is checked by `manage.py check_triggers`.

-- The usage period of a customer that contains the instant p_at: the existing usage_tracking row
-- that covers it, else the customer's current period, else whole months stepped from the current
-- period (calendar months for customers without a processor subscription), clipped so periods of
-- one customer never overlap. No row when the customer does not exist.
CREATE OR REPLACE FUNCTION usage_period_at(p_customer uuid, p_at timestamptz)
RETURNS TABLE (period_start timestamptz, period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    prev_start timestamptz;
    prev_end timestamptz;
    next_start timestamptz;
    cur_start timestamptz;
    cur_end timestamptz;
    anchor timestamp;
    n integer;
BEGIN
    SELECT t.period_start, t.period_end INTO prev_start, prev_end
    FROM usage_tracking t
    WHERE t.customer_id = p_customer AND t.period_start <= p_at
    ORDER BY t.period_start DESC LIMIT 1;
    IF prev_end > p_at THEN
        period_start := prev_start;
        period_end := prev_end;
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT c.current_period_start, c.current_period_end INTO cur_start, cur_end
    FROM customers c WHERE c.id = p_customer;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF p_at >= cur_start AND p_at < cur_end THEN
        period_start := cur_start;
        period_end := cur_end;
    ELSE
        -- Month arithmetic in UTC, whatever the session's TimeZone.
        anchor := CASE WHEN p_at >= cur_end THEN cur_end ELSE cur_start END AT TIME ZONE 'UTC';
        n := (extract(year FROM p_at AT TIME ZONE 'UTC') - extract(year FROM anchor)) * 12
             + extract(month FROM p_at AT TIME ZONE 'UTC') - extract(month FROM anchor);
        WHILE (anchor + n * interval '1 month') AT TIME ZONE 'UTC' > p_at LOOP
            n := n - 1;
        END LOOP;
        WHILE (anchor + (n + 1) * interval '1 month') AT TIME ZONE 'UTC' <= p_at LOOP
            n := n + 1;
        END LOOP;
        period_start := (anchor + n * interval '1 month') AT TIME ZONE 'UTC';
        period_end := (anchor + (n + 1) * interval '1 month') AT TIME ZONE 'UTC';
    END IF;

    IF prev_end IS NOT NULL AND prev_end > period_start THEN
        period_start := prev_end;
    END IF;
    SELECT min(t.period_start) INTO next_start
    FROM usage_tracking t
    WHERE t.customer_id = p_customer AND t.period_start > p_at;
    IF next_start IS NOT NULL AND next_start < period_end THEN
        period_end := next_start;
    END IF;
    RETURN NEXT;
END;
$$;


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
    --    (both the unique key and the no-overlap exclusion constraint are arbiters).
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


-- Active-projects deltas land on each customer's period that contains now(): directly on the
-- existing row, else through usage_period_at and usage_tracking_add.
CREATE OR REPLACE FUNCTION usage_tracking_add_active(p_customer uuid[], p_delta integer[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rest_customer uuid[];
    rest_delta integer[];
    customers_ uuid[];
    starts timestamptz[];
    ends timestamptz[];
    deltas integer[];
BEGIN
    IF p_customer IS NULL THEN
        RETURN;
    END IF;

    IF cardinality(p_customer) = 1 THEN
        UPDATE usage_tracking t
        SET active_projects_count = t.active_projects_count + p_delta[1], updated_at = now()
        WHERE t.customer_id = p_customer[1] AND t.period_start <= now() AND t.period_end > now();
        IF FOUND THEN
            RETURN;
        END IF;
        rest_customer := p_customer;
        rest_delta := p_delta;
    ELSE
        PERFORM 1 FROM usage_tracking t
        WHERE t.customer_id = ANY (p_customer) AND t.period_start <= now() AND t.period_end > now()
        ORDER BY t.customer_id
        FOR UPDATE;

        WITH applied AS (
            UPDATE usage_tracking t
            SET active_projects_count = t.active_projects_count + d.delta, updated_at = now()
            FROM unnest(p_customer, p_delta) AS d(customer_id, delta)
            WHERE t.customer_id = d.customer_id AND t.period_start <= now() AND t.period_end > now()
            RETURNING t.customer_id
        )
        SELECT array_agg(d.customer_id), array_agg(d.delta) INTO rest_customer, rest_delta
        FROM unnest(p_customer, p_delta) AS d(customer_id, delta)
        WHERE d.customer_id NOT IN (SELECT customer_id FROM applied);

        IF rest_customer IS NULL THEN
            RETURN;
        END IF;
    END IF;

    SELECT array_agg(d.customer_id), array_agg(p.period_start), array_agg(p.period_end), array_agg(d.delta)
    INTO customers_, starts, ends, deltas
    FROM unnest(rest_customer, rest_delta) AS d(customer_id, delta)
    CROSS JOIN LATERAL usage_period_at(d.customer_id, now()) AS p;
    PERFORM usage_tracking_add(customers_, starts, ends, deltas, NULL, NULL);
END;
$$;


-- Preset counters: usage_count moves by deltas; last_used_at moves forward with new uses and is
-- recounted (MAX over the preset's uses, one index probe) when a use goes away.
CREATE OR REPLACE FUNCTION usage_presets_add(
    p_preset uuid[], p_count integer[], p_last_used timestamptz[], p_recount boolean[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_preset IS NULL THEN
        RETURN;
    END IF;
    IF cardinality(p_preset) = 1 AND NOT p_recount[1] THEN
        -- A lone increment: its UPDATE re-applies greatest() to the newest row version.
        UPDATE presets p
        SET usage_count = p.usage_count + p_count[1],
            last_used_at = greatest(p.last_used_at, p_last_used[1])
        WHERE p.id = p_preset[1];
        RETURN;
    END IF;
    -- Lock first: the recount below is then a later statement, so it sees every committed use.
    PERFORM 1 FROM presets p WHERE p.id = ANY (p_preset) ORDER BY p.id FOR UPDATE;
    UPDATE presets p
    SET usage_count = p.usage_count + d.delta,
        last_used_at = CASE
            WHEN d.recount THEN (SELECT max(u.used_at) FROM preset_usage u WHERE u.preset_id = p.id)
            ELSE greatest(p.last_used_at, d.last_used)
        END
    FROM (
        SELECT preset_id, sum(delta) AS delta, max(last_used) AS last_used, bool_or(recount) AS recount
        FROM unnest(p_preset, p_count, p_last_used, p_recount) AS u(preset_id, delta, last_used, recount)
        GROUP BY preset_id
    ) d
    WHERE p.id = d.preset_id;
END;
$$;
