-- A paid overage pack recorded and granted in one statement (SPEC §5, §11): what
-- billing/services/webhooks/effects.py credit_purchase does once the metadata has been checked in
-- Python (p_quantity is the parsed quantity, p_granted as the audit writes it, p_outcome the outcome
-- once granted), with
-- the same grant, audit row and outcome; the grant's remaining is set by its trigger and not read
-- back. A customer not there yet or a stored failure to retry raises SQLSTATE WH001 before anything
-- is kept, and the Python path applies the event. Returns the inbox row; duplicate when an earlier
-- delivery already applied it.
CREATE OR REPLACE FUNCTION billing_webhook_pack_apply(
    p_processor text, p_event_id text, p_event_type text, p_occurred_at timestamptz,
    p_api_version text, p_payload jsonb, p_actor text,
    p_customer uuid, p_metric text, p_quantity numeric, p_granted text, p_outcome text, p_external_ref text
) RETURNS TABLE (duplicate boolean, id bigint, status text, outcome text, error text, customer_id uuid,
                 attempts integer, retry_expected boolean, received_at timestamptz, processed_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    event bigint;
    grant_id uuid;
    message text;
    reason text := format('overage pack paid (%s)', p_event_id);
BEGIN
    event := billing_webhook_claim(p_processor, p_event_id, p_event_type, p_occurred_at, p_api_version, p_payload);
    IF event IS NULL THEN
        RETURN QUERY SELECT true, e.id, e.status::text, e.outcome, e.error, e.customer_id, e.attempts,
                            e.retry_expected, e.received_at, e.processed_at
                     FROM webhook_events e WHERE e.processor = p_processor AND e.event_id = p_event_id;
        RETURN;
    END IF;
    PERFORM FROM customers c WHERE c.id = p_customer;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'customer % is not there yet', p_customer USING ERRCODE = 'WH001';
    END IF;
    INSERT INTO credit_grants (customer_id, metric, granted, source, expires_at, created_by, reason, external_ref)
    VALUES (p_customer, p_metric, p_quantity, 'purchase', NULL, p_actor, reason, p_external_ref)
    ON CONFLICT (external_ref) DO NOTHING
    RETURNING credit_grants.id INTO grant_id;
    IF grant_id IS NULL THEN
        message := format('credit for %s already granted', p_external_ref);
    ELSE
        INSERT INTO audit_log (at, actor, action, target_type, target_id, customer_id, before, after, reason)
        VALUES (now(), p_actor, 'credit_grant', 'credit_grant', grant_id::text, p_customer, NULL,
                jsonb_build_object('metric', p_metric, 'granted', p_granted, 'source', 'purchase',
                                   'expires_at', NULL, 'external_ref', p_external_ref),
                reason);
        message := p_outcome;
    END IF;
    RETURN QUERY UPDATE webhook_events e SET status = 'processed', outcome = message, error = '',
                        customer_id = p_customer, processed_at = now()
                 WHERE e.id = event
                 RETURNING false, e.id, e.status::text, e.outcome, e.error, e.customer_id, e.attempts,
                           e.retry_expected, e.received_at, e.processed_at;
END;
$$;
