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
        WHERE t.customer_id = p_customer[1] AND usage_period_current(t.period_start, t.period_end);
        IF FOUND THEN
            RETURN;
        END IF;
        rest_customer := p_customer;
        rest_delta := p_delta;
    ELSE
        PERFORM 1 FROM usage_tracking t
        WHERE t.customer_id = ANY (p_customer) AND usage_period_current(t.period_start, t.period_end)
        ORDER BY t.customer_id
        FOR UPDATE;

        WITH applied AS (
            UPDATE usage_tracking t
            SET active_projects_count = t.active_projects_count + d.delta, updated_at = now()
            FROM unnest(p_customer, p_delta) AS d(customer_id, delta)
            WHERE t.customer_id = d.customer_id AND usage_period_current(t.period_start, t.period_end)
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
