-- The customer's live plan (SPEC §5), defined once: the customer's live subscription
-- (billing_live_by_customer: the newest that is not canceled), else the Free plan (subscription_status
-- 'none', subscription_id NULL); plan_id NULL only when there is neither. billing_live_plan(NULL) is
-- the plan of a customer with no live subscription. billing_consume, the findings, Finance's usage
-- report and Python (billing/selectors.py) all read it; a SQL function PostgreSQL inlines into the
-- caller's query (over many customers: CROSS JOIN LATERAL billing_live_plan(c.id); over a month of
-- usage periods, Finance joins billing_live_by_customer() instead).
CREATE OR REPLACE FUNCTION billing_live_plan(p_customer uuid)
RETURNS TABLE (subscription_id uuid, subscription_status text, plan_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT s.subscription_id, coalesce(s.subscription_status, 'none'), coalesce(s.plan_id, free.id)
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT s.subscription_id, s.subscription_status, s.plan_id FROM billing_live_by_customer() s
        WHERE s.customer = p_customer
        ORDER BY s.created_at DESC, s.subscription_id DESC LIMIT 1
    ) AS s ON true
    LEFT JOIN plans free ON free.code = 'free'
$$;
