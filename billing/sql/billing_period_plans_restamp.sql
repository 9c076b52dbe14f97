-- After a customer's live plan changed (billing/triggers.py): the customer's periods that have not ended
-- (the current one, and one opened ahead) take the new live plan. Ended periods keep theirs, so a plan
-- change today moves no past month's usage between plans (SPEC §7 Finance).
CREATE OR REPLACE FUNCTION billing_period_plans_restamp(p_customer uuid)
RETURNS void
LANGUAGE sql AS $$
    UPDATE usage_tracking t SET plan_id = lp.plan_id
    FROM billing_live_plan(p_customer) AS lp
    WHERE p_customer IS NOT NULL AND t.customer_id = p_customer AND t.period_end > now()
      AND t.plan_id IS DISTINCT FROM lp.plan_id
$$;
