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
