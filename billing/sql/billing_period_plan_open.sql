-- The plan a usage period is stamped with as it opens (usage_tracking.plan_id, SPEC §7 Finance): the
-- customer's live plan (billing_live_plan), else NULL when there is neither a live subscription nor
-- a Free plan. Called by billing's BEFORE INSERT trigger on usage_tracking (billing/triggers.py
-- usage_period_triggers) for every period opened, by whoever opens it. SECURITY DEFINER, owned by the
-- schema's owner: the role that inserts the period may be the product's own role of an adopted
-- database, which counts its events through billing-ops' triggers but was never granted the plans or
-- subscriptions. Its search_path is fixed with pg_temp last, so a temporary table of the caller's cannot
-- stand in for them. It only reads.
CREATE OR REPLACE FUNCTION billing_period_plan_open(p_customer uuid)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT lp.plan_id FROM billing_live_plan(p_customer) AS lp
$$;
