-- A time as Python's datetime.isoformat() writes an aware UTC datetime (2026-12-05T09:30:00+00:00,
-- microseconds only when there are some): the audit rows and outcomes the webhook effects write in SQL
-- read exactly like those written in Python.
CREATE OR REPLACE FUNCTION billing_webhook_iso(p_at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM p_at)::bigint % 1000000 <> 0
                THEN to_char(p_at AT TIME ZONE 'UTC', '.US') ELSE '' END
        || '+00:00'
$$;
