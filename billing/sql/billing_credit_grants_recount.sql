-- Reconciliation's fix of credit_grants.remaining (I4): granted minus the ledger's draws, computed
-- here. SECURITY DEFINER, owned by the schema's owner: the counter guard lets it through because it
-- marks its transaction in usage_counter_write_grants (usage/sql/usage_counter_writes_granted.sql),
-- which the app role cannot write. search_path fixed with pg_temp last. The caller holds the locks.
CREATE OR REPLACE FUNCTION billing_credit_grants_recount(p_customers uuid[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    mine boolean;
BEGIN
    INSERT INTO usage_counter_write_grants VALUES (pg_current_xact_id()::text::bigint) ON CONFLICT DO NOTHING RETURNING true INTO mine;
    UPDATE credit_grants g SET remaining = g.granted - coalesce(d.drawn, 0)
    FROM credit_grants q
    LEFT JOIN (SELECT grant_id, sum(quantity) AS drawn FROM credit_draws
               WHERE customer_id = ANY (p_customers) GROUP BY grant_id) d ON d.grant_id = q.id
    WHERE g.id = q.id AND q.customer_id = ANY (p_customers)
      AND g.remaining <> g.granted - coalesce(d.drawn, 0);
    IF mine THEN
        DELETE FROM usage_counter_write_grants WHERE xact = pg_current_xact_id()::text::bigint;
    END IF;
END;
$$;
