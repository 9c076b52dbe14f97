-- Billing rules in the database (SPEC §5): credit ledger, period rollover, consumption.
--
-- Lock order, the same everywhere: the customer row (rollover only, FOR NO KEY UPDATE, which the
-- product's inserts' foreign-key locks do not conflict with), then the customer's current-period
-- usage_tracking row, then credit_grants in id order. Every consume locks the period row first, so
-- consumes of one customer are serialised while different customers run in parallel.
--
-- Functions named billing_<what>_<verb>; every one is checked by `manage.py check_triggers`.

-- credit_grants.remaining moves by what the ledger drew (I4); one array element per grant.
CREATE OR REPLACE FUNCTION billing_credit_grants_add(p_grant uuid[], p_drawn numeric[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_grant IS NULL THEN
        RETURN;
    END IF;
    IF cardinality(p_grant) = 1 THEN
        UPDATE credit_grants g SET remaining = g.remaining - p_drawn[1] WHERE g.id = p_grant[1];
        RETURN;
    END IF;
    PERFORM 1 FROM credit_grants g WHERE g.id = ANY (p_grant) ORDER BY g.id FOR UPDATE;
    UPDATE credit_grants g SET remaining = g.remaining - d.drawn
    FROM unnest(p_grant, p_drawn) AS d(grant_id, drawn)
    WHERE g.id = d.grant_id;
END;
$$;


-- Open the customer's next usage period, once. Without p_start: when the current period has ended
-- at p_now, the period containing p_now (calendar months, or whole months stepped from a processor's
-- period). With p_start/p_end: a processor renewal's period. Returns false, changing nothing, when
-- that period is already open (cron and a webhook racing, a redelivery, an older renewal).
-- Credits are not touched; the gauge carries over; metered counters start from the period's events.
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
        FROM subscriptions s
        WHERE s.customer_id = p_customer AND s.status <> 'canceled' AND s.processor <> 'manual'
          AND s.current_period_start <= p_now AND s.current_period_end > p_now
        ORDER BY s.created_at DESC LIMIT 1;
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
    PERFORM usage_tracking_open(p_customer, new_start, new_end);
    INSERT INTO audit_log (at, actor, action, target_type, target_id, customer_id, before, after, reason)
    VALUES (now(), p_actor, 'period_rollover', 'customer', p_customer::text, p_customer,
            jsonb_build_object('period_start', cur_start, 'period_end', cur_end),
            jsonb_build_object('period_start', new_start, 'period_end', new_end),
            CASE WHEN NOT renewal THEN 'the period ended; metered usage restarts, credits carry over'
                 ELSE 'processor renewal; metered usage restarts, credits carry over' END);
    RETURN true;
END;
$$;


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
    WHERE t.customer_id = p_customer AND t.period_start <= now() AND t.period_end > now()
    FOR UPDATE;
    IF FOUND THEN
        RETURN row_;
    END IF;
    SELECT p.period_start, p.period_end INTO p_start, p_end FROM usage_period_at(p_customer, now()) AS p;
    PERFORM usage_tracking_open(p_customer, p_start, p_end);
    SELECT * INTO row_ FROM usage_tracking t
    WHERE t.customer_id = p_customer AND t.period_start <= now() AND t.period_end > now()
    FOR UPDATE;
    RETURN row_;
END;
$$;


-- Check-and-consume `amount` of a metric in one locked step (SPEC §5). Allowed when period usage +
-- amount <= plan allowance + remaining credit; usage beyond the allowance draws credit, earliest
-- expiry first, then oldest. With an idempotency key, a retry returns the first answer and consumes
-- nothing. Bad arguments raise (SQLSTATE 22023 / P0002) and write nothing.
CREATE OR REPLACE FUNCTION billing_consume(customer_id uuid, metric text, amount numeric, idempotency_key text)
RETURNS TABLE (allowed boolean, new_usage numeric, effective_limit numeric, plan text,
               subscription_status text, credits_remaining numeric, message text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_customer uuid := billing_consume.customer_id;
    v_metric text := billing_consume.metric;
    v_amount numeric := billing_consume.amount;
    v_key text := billing_consume.idempotency_key;
    row_ usage_tracking;
    prior consume_requests;
    pl plans;
    v_status text;
    v_plan_id bigint;
    v_allowance numeric;
    v_used numeric;
    v_credits numeric;
    v_granted_ever boolean;
    v_need numeric;
    v_take numeric;
    v_event uuid;
    v_label text;
    v_next plans;
    v_next_allowance numeric;
    grant_ record;
BEGIN
    IF v_metric IS NULL OR v_metric NOT IN ('ai_interaction', 'minutes') THEN
        RAISE EXCEPTION 'unknown metric %; metrics are ai_interaction and minutes', coalesce(quote_literal(v_metric), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_amount IS NULL OR v_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be a positive number, not %', coalesce(v_amount::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_amount <> round(v_amount, 3) OR v_amount >= 1e15 THEN
        RAISE EXCEPTION 'amount % has more than 3 decimals or is too large', v_amount
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_key IS NOT NULL AND (length(v_key) = 0 OR length(v_key) > 200) THEN
        RAISE EXCEPTION 'idempotency key must be 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_customer IS NULL OR NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = v_customer) THEN
        RAISE EXCEPTION 'no customer with id %', coalesce(v_customer::text, 'NULL') USING ERRCODE = 'no_data_found';
    END IF;

    row_ := billing_period_lock(v_customer);

    IF v_key IS NOT NULL THEN
        SELECT * INTO prior FROM consume_requests r WHERE r.customer_id = v_customer AND r.idempotency_key = v_key;
        IF FOUND THEN
            IF prior.metric <> v_metric OR prior.amount <> v_amount THEN
                RAISE EXCEPTION 'idempotency key % was first used to consume % %; a retry must repeat the same metric and amount',
                    quote_literal(v_key), trim_scale(prior.amount), prior.metric
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            allowed := prior.allowed;
            new_usage := prior.new_usage;
            effective_limit := prior.effective_limit;
            plan := prior.plan;
            subscription_status := prior.subscription_status;
            credits_remaining := prior.credits_remaining;
            message := prior.message;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    SELECT s.status, s.plan_id INTO v_status, v_plan_id
    FROM subscriptions s
    WHERE s.customer_id = v_customer AND s.status <> 'canceled'
    ORDER BY s.created_at DESC LIMIT 1;
    IF NOT FOUND THEN
        v_status := 'none';  -- no live subscription: the Free plan
    END IF;
    SELECT p.* INTO pl FROM plans p WHERE (v_plan_id IS NULL AND p.code = 'free') OR p.id = v_plan_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'customer % has no live subscription and there is no free plan', v_customer
            USING ERRCODE = 'no_data_found';
    END IF;

    v_label := CASE v_metric WHEN 'ai_interaction' THEN 'AI interactions' ELSE 'transcription minutes' END;
    v_allowance := CASE v_metric WHEN 'ai_interaction' THEN pl.ai_interactions_per_period ELSE pl.minutes_per_period END;
    v_used := CASE v_metric WHEN 'ai_interaction' THEN row_.ai_interactions_count ELSE row_.minutes_used END;
    SELECT coalesce(sum(cg.remaining) FILTER (WHERE cg.remaining > 0 AND (cg.expires_at IS NULL OR cg.expires_at > now())), 0),
           count(*) > 0
    INTO v_credits, v_granted_ever
    FROM credit_grants cg WHERE cg.customer_id = v_customer AND cg.metric = v_metric;

    plan := pl.code;
    subscription_status := v_status;
    IF v_allowance IS NULL THEN
        allowed := true;
        effective_limit := NULL;
    ELSE
        effective_limit := v_allowance + greatest(v_used - v_allowance, 0) + v_credits;
        allowed := v_used + v_amount <= effective_limit;
    END IF;

    IF allowed THEN
        INSERT INTO usage_events AS e (id, customer_id, metric, quantity, occurred_at, idempotency_key, reason, created_at)
        VALUES (gen_random_uuid(), v_customer, v_metric, v_amount, now(), v_key, '', now())
        RETURNING e.id INTO v_event;
        -- The part of this amount beyond the allowance draws credit, earliest expiry first, then oldest.
        v_need := CASE WHEN v_allowance IS NULL THEN 0
                       ELSE greatest(v_used + v_amount - greatest(v_allowance, v_used), 0) END;
        FOR grant_ IN
            SELECT cg.id, cg.remaining FROM credit_grants cg
            WHERE cg.customer_id = v_customer AND cg.metric = v_metric AND cg.remaining > 0
              AND (cg.expires_at IS NULL OR cg.expires_at > now())
              AND v_need > 0
            ORDER BY cg.expires_at NULLS LAST, cg.created_at, cg.id
            FOR UPDATE
        LOOP
            EXIT WHEN v_need <= 0;
            v_take := least(v_need, grant_.remaining);
            INSERT INTO credit_draws (grant_id, customer_id, usage_event_id, quantity, drawn_at)
            VALUES (grant_.id, v_customer, v_event, v_take, now());
            v_need := v_need - v_take;
            v_credits := v_credits - v_take;
        END LOOP;
        new_usage := v_used + v_amount;
        credits_remaining := v_credits;
        message := format('Allowed: %s of %s %s used this period on %s%s.',
            trim_scale(new_usage), coalesce(trim_scale(v_allowance)::text, 'unlimited'), v_label, pl.name,
            CASE WHEN v_granted_ever THEN format('; %s credit %s left', trim_scale(v_credits), v_label) ELSE '' END);
    ELSE
        new_usage := v_used;
        credits_remaining := v_credits;
        -- What to do: the cheapest plan with a larger allowance for this metric, or a credit pack.
        SELECT * INTO v_next FROM plans p
        WHERE coalesce(CASE v_metric WHEN 'ai_interaction' THEN p.ai_interactions_per_period ELSE p.minutes_per_period END,
                       'Infinity'::numeric) > v_allowance
        ORDER BY p.price, p.id LIMIT 1;
        v_next_allowance := CASE v_metric WHEN 'ai_interaction' THEN v_next.ai_interactions_per_period
                                          ELSE v_next.minutes_per_period END;
        message := format('Denied: %s of %s %s used this period on %s (allowance %s)%s; %s more would exceed it. %s',
            trim_scale(v_used), trim_scale(effective_limit), v_label, pl.name, trim_scale(v_allowance),
            CASE WHEN NOT v_granted_ever THEN ', and no overage credit'
                 WHEN v_credits = 0 THEN ', and the overage credit is used up (0 left)'
                 ELSE format(', with %s credit %s left', trim_scale(v_credits), v_label) END,
            trim_scale(v_amount),
            CASE WHEN v_next.id IS NULL THEN format('Buy an overage pack of %s.', v_label)
                 ELSE format('Buy an overage pack of %s, or upgrade to %s (%s per period).', v_label, v_next.name,
                             coalesce(trim_scale(v_next_allowance)::text, 'unlimited')) END);
    END IF;

    IF v_key IS NOT NULL THEN
        INSERT INTO consume_requests (customer_id, idempotency_key, metric, amount, allowed, new_usage, effective_limit,
                                      plan, subscription_status, credits_remaining, message, usage_event_id, created_at)
        VALUES (v_customer, v_key, v_metric, v_amount, allowed, new_usage, effective_limit,
                plan, subscription_status, credits_remaining, message, v_event, now());
    END IF;
    RETURN NEXT;
END;
$$;


-- Customers deleted in raw SQL take their billing rows with them at the database level, as the
-- product's tables do (usage/sql/0002_cascade.sql); a grant takes its draws.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT con.conname, con.conrelid::regclass AS tbl, a.attname AS col, con.confrelid::regclass AS ref
        FROM pg_constraint con
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
        WHERE con.contype = 'f'
          AND con.conrelid::regclass::text IN ('subscriptions', 'credit_grants', 'credit_draws', 'consume_requests')
          AND con.confrelid::regclass::text IN ('customers', 'credit_grants')
    LOOP
        EXECUTE format(
            'ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %s (id) '
            'ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED',
            r.tbl, r.conname, r.conname, r.col, r.ref);
    END LOOP;
END;
$$;
