-- Check-and-consume `amount` of a metric in one locked step (SPEC §5). Allowed when period usage +
-- amount <= plan allowance + remaining credit; usage beyond the allowance draws credit, earliest
-- expiry first, then oldest. With an idempotency key, a retry returns the first answer and consumes
-- nothing. Each refusal writes nothing and has its own SQLSTATE (README "Consume, from any service";
-- class UC is billing-ops' own, "consume refused"; 22003 is the standard code for a number too large):
--   UC001 no such customer (or NULL)            UC006 idempotency key of 0 or over 200 characters
--   UC002 unknown metric (or NULL)              UC007 key reused with another metric or amount
--   UC003 amount <= 0 (or NULL)                 UC008 key taken by a usage event the product wrote
--   UC004 amount with more than 3 decimals      UC009 no live subscription and no free plan
--   22003 amount of 10^15 or more               UC005 a fraction of a whole-numbered metric
-- Amounts and answers are normalized with trim_scale (2.000 is 2).
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
    IF v_metric IS NULL OR NOT EXISTS (SELECT 1 FROM usage_metrics() m WHERE m.code = v_metric AND m.metered) THEN
        RAISE EXCEPTION 'unknown metric %; metrics are ai_interaction and minutes', coalesce(quote_literal(v_metric), 'NULL')
            USING ERRCODE = 'UC002';
    END IF;
    IF v_amount IS NULL OR v_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be a positive number, not %', coalesce(v_amount::text, 'NULL')
            USING ERRCODE = 'UC003';
    END IF;
    IF v_amount >= 1e15 THEN
        RAISE EXCEPTION 'amount is too large (at most 999,999,999,999,999.999 per call)'
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    IF v_amount <> round(v_amount, 3) THEN
        RAISE EXCEPTION 'amount % has more than 3 decimals', v_amount USING ERRCODE = 'UC004';
    END IF;
    -- 1.000 (with any number of trailing zeros) is 1: answers and messages never echo the caller's scale.
    v_amount := trim_scale(v_amount);
    -- A metric the catalogue counts in whole numbers (AI interactions) takes no fractions.
    SELECT m.label INTO v_label FROM usage_metrics() m WHERE m.code = v_metric AND m.whole;
    IF FOUND AND v_amount <> trunc(v_amount) THEN
        RAISE EXCEPTION '% are counted in whole numbers, not %', upper(left(v_label, 1)) || substr(v_label, 2), v_amount
            USING ERRCODE = 'UC005';
    END IF;
    IF v_key IS NOT NULL AND (length(v_key) = 0 OR length(v_key) > 200) THEN
        RAISE EXCEPTION 'idempotency key must be 1 to 200 characters' USING ERRCODE = 'UC006';
    END IF;
    IF v_customer IS NULL OR NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = v_customer) THEN
        RAISE EXCEPTION 'no customer with id %', coalesce(v_customer::text, 'NULL') USING ERRCODE = 'UC001';
    END IF;

    row_ := billing_period_lock(v_customer);

    IF v_key IS NOT NULL THEN
        SELECT * INTO prior FROM consume_requests r WHERE r.customer_id = v_customer AND r.idempotency_key = v_key;
        IF FOUND THEN
            IF prior.metric <> v_metric OR prior.amount <> v_amount THEN
                RAISE EXCEPTION 'idempotency key % was first used to consume % %; a retry must repeat the same metric and amount',
                    quote_literal(v_key), trim_scale(prior.amount), prior.metric
                    USING ERRCODE = 'UC007';
            END IF;
            allowed := prior.allowed;
            new_usage := trim_scale(prior.new_usage);
            effective_limit := trim_scale(prior.effective_limit);
            plan := prior.plan;
            subscription_status := prior.subscription_status;
            credits_remaining := trim_scale(prior.credits_remaining);
            message := prior.message;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    SELECT lp.subscription_status, lp.plan_id INTO v_status, v_plan_id FROM billing_live_plan(v_customer) lp;
    SELECT p.* INTO pl FROM plans p WHERE p.id = v_plan_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'customer % has no live subscription and there is no free plan', v_customer
            USING ERRCODE = 'UC009';
    END IF;

    SELECT m.label, (to_jsonb(row_) ->> m.counter)::numeric INTO v_label, v_used FROM usage_metrics() m WHERE m.code = v_metric;
    v_allowance := billing_plan_allowance(pl, v_metric);
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
        -- The product may have written a usage event with this key itself: a clear refusal, not a
        -- unique violation (ON CONFLICT, so a concurrent product insert cannot slip between a check and this).
        INSERT INTO usage_events AS e (id, customer_id, metric, quantity, occurred_at, idempotency_key, reason, created_at)
        VALUES (gen_random_uuid(), v_customer, v_metric, v_amount, now(), v_key, '', now())
        ON CONFLICT (customer_id, idempotency_key) DO NOTHING
        RETURNING e.id INTO v_event;
        IF v_event IS NULL THEN
            RAISE EXCEPTION 'idempotency key % is already taken by a usage event written without billing_consume; use a new key',
                quote_literal(v_key)
                USING ERRCODE = 'UC008';
        END IF;
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
        new_usage := trim_scale(v_used + v_amount);
        credits_remaining := trim_scale(v_credits);
        message := format('Allowed: %s of %s %s used this period on %s%s.',
            trim_scale(new_usage), coalesce(trim_scale(v_allowance)::text, 'unlimited'), v_label, pl.name,
            CASE WHEN v_granted_ever THEN format('; %s credit %s left', trim_scale(v_credits), v_label) ELSE '' END);
    ELSE
        new_usage := trim_scale(v_used);
        credits_remaining := trim_scale(v_credits);
        -- What to do: the cheapest plan with a larger allowance for this metric, or a credit pack.
        SELECT * INTO v_next FROM plans p
        WHERE coalesce(billing_plan_allowance(p, v_metric), 'Infinity'::numeric) > v_allowance
        ORDER BY p.price, p.id LIMIT 1;
        v_next_allowance := billing_plan_allowance(v_next, v_metric);
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

    effective_limit := trim_scale(effective_limit);
    IF v_key IS NOT NULL THEN
        INSERT INTO consume_requests (customer_id, idempotency_key, metric, amount, allowed, new_usage, effective_limit,
                                      plan, subscription_status, credits_remaining, message, usage_event_id, created_at)
        VALUES (v_customer, v_key, v_metric, v_amount, allowed, new_usage, effective_limit,
                plan, subscription_status, credits_remaining, message, v_event, now());
    END IF;
    RETURN NEXT;
END;
$$;
