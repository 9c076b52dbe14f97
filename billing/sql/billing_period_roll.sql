-- Open the customer's next usage period, once. Without p_start: when the current period has ended
-- at p_now, the period containing p_now (calendar months, or whole months stepped from a processor's
-- period). With p_start/p_end: a processor renewal's period. Returns false, changing nothing, when
-- that period is already open (cron and a webhook racing, a redelivery, an older renewal).
-- Credits are not touched; the gauge carries over; metered counters start from the period's events;
-- the new period is stamped with the customer's live plan (usage_tracking.plan_id) by billing's trigger.
CREATE OR REPLACE FUNCTION billing_period_roll(
    p_customer uuid, p_now timestamptz, p_actor text,
    p_start timestamptz DEFAULT NULL, p_end timestamptz DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    cur_start timestamptz;
    cur_end timestamptz;
    new_start timestamptz;
    new_end timestamptz;
    next_start timestamptz;
    renewal boolean := false;
BEGIN
    SELECT c.current_period_start, c.current_period_end INTO cur_start, cur_end
    FROM customers c WHERE c.id = p_customer
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no customer with id %', p_customer USING ERRCODE = 'no_data_found';
    END IF;

    IF p_start IS NULL THEN
        IF cur_end > p_now THEN
            RETURN false;
        END IF;
        -- A processor subscription's period, when it holds p_now (from its last webhook).
        SELECT greatest(s.current_period_start, cur_end), s.current_period_end INTO p_start, p_end
        FROM billing_live_plan(p_customer) AS lp JOIN subscriptions s ON s.id = lp.subscription_id
        WHERE s.processor <> 'manual'
          AND s.current_period_start <= p_now AND s.current_period_end > p_now;
    ELSE
        renewal := true;
        IF p_end IS NULL OR p_end <= p_start THEN
            RAISE EXCEPTION 'renewal period [%, %) is empty', p_start, p_end USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF p_start < cur_end THEN
            RETURN false;
        END IF;
    END IF;

    IF p_start IS NULL THEN
        -- Calendar months, or whole months stepped from the last period.
        SELECT p.period_start, p.period_end INTO new_start, new_end FROM usage_period_at(p_customer, p_now) AS p;
    ELSE
        -- A period row opened earlier (lazily, or by a trigger) that holds p_start is that period.
        SELECT t.period_start, t.period_end INTO new_start, new_end
        FROM usage_tracking t
        WHERE t.customer_id = p_customer AND t.period_start <= p_start AND t.period_end > p_start;
        IF NOT FOUND THEN
            SELECT min(t.period_start) INTO next_start
            FROM usage_tracking t WHERE t.customer_id = p_customer AND t.period_start > p_start;
            new_start := p_start;
            new_end := CASE WHEN next_start < p_end THEN next_start ELSE p_end END;
        END IF;
    END IF;

    UPDATE customers SET current_period_start = new_start, current_period_end = new_end WHERE id = p_customer;
    -- Stamped with the live plan as it opens (billing's trigger on usage_tracking; SPEC §7 Finance).
    PERFORM usage_tracking_open(p_customer, new_start, new_end);
    PERFORM billing_audit_append(jsonb_build_array(jsonb_build_object(
        'actor', p_actor, 'action', 'period_rollover', 'target_type', 'customer', 'target_id', p_customer::text,
        'customer_id', p_customer,
        'before', jsonb_build_object('period_start', cur_start, 'period_end', cur_end),
        'after', jsonb_build_object('period_start', new_start, 'period_end', new_end),
        'reason', CASE WHEN NOT renewal THEN 'the period ended; metered usage restarts, credits carry over'
                       ELSE 'processor renewal; metered usage restarts, credits carry over' END)));
    RETURN true;
END;
$$;
