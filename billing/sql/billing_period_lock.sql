-- The customer's current-period usage_tracking row, locked: rolls the period over first when it has
-- ended (lazily, for customers cron has not reached yet) and opens the row when it is missing.
CREATE OR REPLACE FUNCTION billing_period_lock(p_customer uuid)
RETURNS usage_tracking
LANGUAGE plpgsql AS $$
DECLARE
    row_ usage_tracking;
    p_start timestamptz;
    p_end timestamptz;
BEGIN
    IF EXISTS (SELECT 1 FROM customers c WHERE c.id = p_customer AND c.current_period_end <= now()) THEN
        PERFORM billing_period_roll(p_customer, now(), 'consume (lazy rollover)');
    END IF;
    SELECT * INTO row_ FROM usage_tracking t
    WHERE t.customer_id = p_customer AND usage_period_current(t.period_start, t.period_end)
    FOR UPDATE;
    IF FOUND THEN
        RETURN row_;
    END IF;
    SELECT p.period_start, p.period_end INTO p_start, p_end FROM usage_period_at(p_customer, now()) AS p;
    PERFORM usage_tracking_open(p_customer, p_start, p_end);
    SELECT * INTO row_ FROM usage_tracking t
    WHERE t.customer_id = p_customer AND usage_period_current(t.period_start, t.period_end)
    FOR UPDATE;
    RETURN row_;
END;
$$;
