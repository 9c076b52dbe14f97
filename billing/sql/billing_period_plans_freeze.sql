-- Before a customer's live plan changes (a subscriptions row inserted, deleted, or its customer, plan or
-- status changed: billing/triggers.py): the customer's ended usage periods not stamped yet take the
-- plan in effect until now, the live plan still visible to a BEFORE trigger. A period's plan
-- (usage_tracking.plan_id, SPEC §7 Finance) is the plan in effect for it; an unstamped period reads the
-- live plan (billing.selectors.PERIOD_PLAN_SQL), which is that plan only while no change has happened
-- since it opened: this keeps it so. Rare writes, off the counters' path (plan_id is in no index).
CREATE OR REPLACE FUNCTION billing_period_plans_freeze(p_customer uuid)
RETURNS void
LANGUAGE sql AS $$
    UPDATE usage_tracking t SET plan_id = lp.plan_id
    FROM billing_live_plan(p_customer) AS lp
    WHERE p_customer IS NOT NULL AND t.customer_id = p_customer AND t.plan_id IS NULL
      AND t.period_end <= now()
$$;
