-- Every customer's live subscription, as a set (SPEC §5), defined once: the subscription that is not
-- canceled. A customer has at most one (the unique index subscriptions_one_live_per_customer), and a
-- customer without one is on the Free plan (billing_live_plan says so: billing_live_plan(NULL) is that
-- plan). billing_live_plan reads it for one customer; Finance's pages join it over a month of usage
-- periods (one hash join, not one probe per period row). A SQL function PostgreSQL inlines. Its
-- column is `customer`, not a product column's name: usage/names.py renders the callers' SQL.
CREATE OR REPLACE FUNCTION billing_live_by_customer()
RETURNS TABLE (customer uuid, subscription_id uuid, subscription_status text, plan_id bigint,
               created_at timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT s.customer_id, s.id, s.status::text, s.plan_id, s.created_at
    FROM subscriptions s WHERE s.status <> 'canceled'
$$;
