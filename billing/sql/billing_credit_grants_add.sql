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
