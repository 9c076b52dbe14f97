-- "The current period", defined once: a usage period [p_start, p_end) that contains now(). A SQL
-- function PostgreSQL inlines, so callers' indexes on period_start still serve. Python filters
-- through it too (usage.selectors.current_period).
CREATE OR REPLACE FUNCTION usage_period_current(p_start timestamptz, p_end timestamptz)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT p_start <= now() AND p_end > now()
$$;
