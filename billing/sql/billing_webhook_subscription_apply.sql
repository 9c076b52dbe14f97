-- A subscription event for a subscription we already have, recorded and applied in one statement
-- (SPEC §5, §11): what billing/services/webhooks/effects.py subscription_sync does on its usual path,
-- with the same outcomes and audit rows. Anything else (a new subscription, a price no plan carries,
-- no period, a downgrade the customer's projects block, a stored failure to retry) raises SQLSTATE
-- WH001 before anything is kept, and the Python path applies the event. Returns the inbox row;
-- duplicate when an earlier delivery already applied it.
CREATE OR REPLACE FUNCTION billing_webhook_subscription_apply(
    p_processor text, p_event_id text, p_event_type text, p_occurred_at timestamptz,
    p_api_version text, p_payload jsonb, p_actor text,
    p_external_id text, p_external_customer text, p_price_ids text[], p_status text,
    p_period_start timestamptz, p_period_end timestamptz, p_creation boolean, p_note text
) RETURNS TABLE (duplicate boolean, id bigint, status text, outcome text, error text, customer_id uuid,
                 attempts integer, retry_expected boolean, received_at timestamptz, processed_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    event bigint;
    sub record;
    new_plan record;
    new_start timestamptz;
    new_end timestamptz;
    before jsonb;
    after jsonb;
    message text;
    rolled text := '';
    active integer;
    ending boolean := p_status = 'canceled';
BEGIN
    event := billing_webhook_claim(p_processor, p_event_id, p_event_type, p_occurred_at, p_api_version, p_payload);
    IF event IS NULL THEN
        RETURN QUERY SELECT true, e.id, e.status::text, e.outcome, e.error, e.customer_id, e.attempts,
                            e.retry_expected, e.received_at, e.processed_at
                     FROM webhook_events e WHERE e.processor = p_processor AND e.event_id = p_event_id;
        RETURN;
    END IF;

    SELECT s.id, s.customer_id, s.status, s.current_period_start, s.current_period_end, s.last_event_at,
           p.id AS plan_id, p.code, p.price, p.stripe_price_id, p.paddle_price_id
    INTO sub
    FROM subscriptions s JOIN plans p ON p.id = s.plan_id
    WHERE s.processor = p_processor AND s.external_subscription_id = p_external_id
    ORDER BY s.created_at DESC LIMIT 1
    FOR UPDATE OF s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % is new here', p_external_id USING ERRCODE = 'WH001';
    END IF;

    IF sub.last_event_at IS NOT NULL AND p_occurred_at IS NOT NULL AND p_occurred_at < sub.last_event_at THEN
        message := format('older than the last applied event (%s): subscription unchanged',
                          billing_webhook_iso(sub.last_event_at));
        RETURN QUERY UPDATE webhook_events e SET status = 'ignored', outcome = message, error = '',
                            customer_id = sub.customer_id, processed_at = now()
                     WHERE e.id = event
                     RETURNING false, e.id, e.status::text, e.outcome, e.error, e.customer_id, e.attempts,
                               e.retry_expected, e.received_at, e.processed_at;
        RETURN;
    END IF;
    IF p_creation THEN
        message := format('subscription %s already known: a %s never overwrites it', p_external_id, p_event_type);
        RETURN QUERY UPDATE webhook_events e SET status = 'ignored', outcome = message, error = '',
                            customer_id = sub.customer_id, processed_at = now()
                     WHERE e.id = event
                     RETURNING false, e.id, e.status::text, e.outcome, e.error, e.customer_id, e.attempts,
                               e.retry_expected, e.received_at, e.processed_at;
        RETURN;
    END IF;

    IF ending THEN  -- a cancellation keeps the plan and the period it ends
        SELECT sub.plan_id AS id, sub.code AS code, sub.price AS price, NULL::integer AS max_active_projects
        INTO new_plan;
        new_start := sub.current_period_start;
        new_end := sub.current_period_end;
    ELSE
        -- The plan of the first item whose price a plan carries (add-ons and metered prices carry none).
        SELECT p.id, p.code, p.price, p.max_active_projects INTO new_plan
        FROM unnest(p_price_ids) WITH ORDINALITY AS u(price_id, n)
        JOIN plans p ON u.price_id = CASE p_processor WHEN 'stripe' THEN p.stripe_price_id
                                                      ELSE p.paddle_price_id END
        ORDER BY u.n LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no plan carries the prices %', p_price_ids USING ERRCODE = 'WH001';
        END IF;
        IF p_period_start IS NULL OR p_period_end IS NULL THEN
            RAISE EXCEPTION 'the event carries no period' USING ERRCODE = 'WH001';
        END IF;
        new_start := p_period_start;
        new_end := p_period_end;
    END IF;
    IF new_end <= new_start THEN
        RAISE EXCEPTION 'the period is empty' USING ERRCODE = 'WH001';
    END IF;
    IF new_plan.id <> sub.plan_id AND new_plan.price < sub.price AND new_plan.max_active_projects IS NOT NULL THEN
        -- A downgrade: the warning the Python path would add names the projects to archive.
        SELECT count(*) INTO active FROM projects pr
        WHERE pr.customer_id = sub.customer_id AND pr.status = 'active';
        IF active > new_plan.max_active_projects THEN
            RAISE EXCEPTION 'a downgrade the projects block' USING ERRCODE = 'WH001';
        END IF;
    END IF;

    before := jsonb_build_object('plan', sub.code, 'status', sub.status,
                                 'period_start', billing_webhook_iso(sub.current_period_start),
                                 'period_end', billing_webhook_iso(sub.current_period_end));
    UPDATE subscriptions s SET plan_id = new_plan.id, status = p_status, external_customer_id = p_external_customer,
                               current_period_start = new_start, current_period_end = new_end,
                               last_event_at = coalesce(p_occurred_at, now()), updated_at = now()
    WHERE s.id = sub.id;
    after := jsonb_build_object('plan', new_plan.code, 'status', p_status,
                                'period_start', billing_webhook_iso(new_start),
                                'period_end', billing_webhook_iso(new_end));
    IF before = after THEN
        message := 'no change';
    ELSE
        INSERT INTO audit_log (at, actor, action, target_type, target_id, customer_id, before, after, reason)
        VALUES (now(), p_actor, 'webhook_effect', 'subscription', sub.id::text, sub.customer_id, before, after,
                p_event_type || ' ' || p_event_id);
        -- The period opened when it was first stored: only a new period opens one.
        IF NOT ending
           AND (new_start, new_end) IS DISTINCT FROM (sub.current_period_start, sub.current_period_end)
           AND billing_period_roll(sub.customer_id, now(), p_actor, new_start, new_end) THEN
            rolled := ' Opened the usage period from the processor''s period.';
        END IF;
        message := format('subscription %s updated: %s, %s.%s%s', p_external_id, new_plan.code, p_status,
                          p_note, rolled);
    END IF;
    RETURN QUERY UPDATE webhook_events e SET status = 'processed', outcome = message, error = '',
                        customer_id = sub.customer_id, processed_at = now()
                 WHERE e.id = event
                 RETURNING false, e.id, e.status::text, e.outcome, e.error, e.customer_id, e.attempts,
                           e.retry_expected, e.received_at, e.processed_at;
END;
$$;
