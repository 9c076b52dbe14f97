-- The inbox row of a verified webhook event, for the one-statement effects (billing_webhook_*_apply,
-- billing/services/webhooks/fast.py). Inserts it "not processed yet" and returns its id, or NULL when
-- an earlier delivery already finished it (the caller answers that row, changing nothing). The unique
-- key serializes parallel deliveries: the insert waits for a delivery in flight to commit or roll
-- back. A stored failure is retried by the Python path (it counts attempts): SQLSTATE WH001 says
-- "take the Python path", and rolls back whatever the calling statement did.
CREATE OR REPLACE FUNCTION billing_webhook_claim(
    p_processor text, p_event_id text, p_event_type text, p_occurred_at timestamptz,
    p_api_version text, p_payload jsonb
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    claimed bigint;
    stored text;
BEGIN
    INSERT INTO webhook_events (processor, event_id, event_type, occurred_at, received_at, status,
                                customer_id, outcome, error, attempts, retry_expected, api_version, payload)
    VALUES (p_processor, p_event_id, p_event_type, p_occurred_at, now(), 'failed',
            NULL, '', 'not processed yet', 1, false, p_api_version, p_payload)
    ON CONFLICT (processor, event_id) DO NOTHING
    RETURNING id INTO claimed;
    IF claimed IS NOT NULL THEN
        RETURN claimed;
    END IF;
    SELECT e.status INTO stored FROM webhook_events e
    WHERE e.processor = p_processor AND e.event_id = p_event_id;
    IF stored IS NULL OR stored = 'failed' THEN
        RAISE EXCEPTION 'webhook event % of % needs the Python path', p_event_id, p_processor
            USING ERRCODE = 'WH001';
    END IF;
    RETURN NULL;
END;
$$;
