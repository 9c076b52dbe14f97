-- The one way to append to audit_log (SPEC §5, §10): the app role holds no INSERT on audit_log
-- (manage.py db_roles), so the services, reconciliation and billing_period_roll append through this
-- SECURITY DEFINER function, owned by the schema's owner. It takes the rows as a jsonb array (one
-- call for a reconciliation batch) and stamps each with the transaction's time: a client cannot
-- back-date an audit row. It returns the rows appended. Its search_path is the schema it is installed in, pg_temp last.
CREATE OR REPLACE FUNCTION billing_audit_append(p_rows jsonb)
RETURNS SETOF audit_log
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF jsonb_typeof(p_rows) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'audit rows must be a JSON array of objects' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH appended AS (
        INSERT INTO audit_log (at, actor, action, target_type, target_id, customer_id, before, after, reason)
        SELECT now(), r.actor, r.action, r.target_type, r.target_id, r.customer_id, r.before, r.after,
               coalesce(r.reason, '')
        FROM jsonb_to_recordset(p_rows) AS r(actor text, action text, target_type text, target_id text,
                                             customer_id uuid, before jsonb, after jsonb, reason text)
        RETURNING *
    )
    SELECT * FROM appended;
END;
$$;
