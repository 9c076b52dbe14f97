-- The counter guard's question (SPEC §4 I5, §10): may this transaction write counters directly? Yes
-- only inside a SECURITY DEFINER recount function (usage_tracking_open, usage_tracking_recount,
-- usage_presets_recount, billing_credit_grants_recount) or the owner's counter_writes_allowed(),
-- which plants history in the demo and the tests: each marks its transaction in
-- usage_counter_write_grants, a table only the schema's owner can write. No setting a client can
-- change opens the guard (the former billing_ops.recount could be set by anyone with set_config).
-- PL/pgSQL: adoption installs the functions before it creates billing-ops' own usage tables.
CREATE OR REPLACE FUNCTION usage_counter_writes_granted()
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM usage_counter_write_grants g WHERE g.xact = pg_current_xact_id_if_assigned()::text::bigint);
END;
$$;
