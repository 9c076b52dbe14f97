-- Preset counters: usage_count moves by deltas; last_used_at moves forward with new uses and is
-- recounted (MAX over the preset's uses, one index probe) when a use goes away.
CREATE OR REPLACE FUNCTION usage_presets_add(
    p_preset uuid[], p_count integer[], p_last_used timestamptz[], p_recount boolean[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_preset IS NULL THEN
        RETURN;
    END IF;
    IF cardinality(p_preset) = 1 AND NOT p_recount[1] THEN
        -- A lone increment: its UPDATE re-applies greatest() to the newest row version.
        UPDATE presets p
        SET usage_count = p.usage_count + p_count[1],
            last_used_at = greatest(p.last_used_at, p_last_used[1])
        WHERE p.id = p_preset[1];
        RETURN;
    END IF;
    -- Lock first: the recount below is then a later statement, so it sees every committed use.
    PERFORM 1 FROM presets p WHERE p.id = ANY (p_preset) ORDER BY p.id FOR UPDATE;
    UPDATE presets p
    SET usage_count = p.usage_count + d.delta,
        last_used_at = CASE
            WHEN d.recount THEN (SELECT max(u.used_at) FROM preset_usage u WHERE u.preset_id = p.id)
            ELSE greatest(p.last_used_at, d.last_used)
        END
    FROM (
        SELECT preset_id, sum(delta) AS delta, max(last_used) AS last_used, bool_or(recount) AS recount
        FROM unnest(p_preset, p_count, p_last_used, p_recount) AS u(preset_id, delta, last_used, recount)
        GROUP BY preset_id
    ) d
    WHERE p.id = d.preset_id;
END;
$$;
