-- A plan's allowance per period of a metric (NULL = unlimited), through the metric catalogue's
-- allowance column (usage_metrics(), generated from usage/metrics.py): the one mapping of metric to
-- plans column, for SQL. Python reads the same catalogue (billing.selectors.plan_allowance).
CREATE OR REPLACE FUNCTION billing_plan_allowance(p_plan plans, p_metric text)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (to_jsonb(p_plan) ->> m.allowance)::numeric FROM usage_metrics() m WHERE m.code = p_metric
$$;
