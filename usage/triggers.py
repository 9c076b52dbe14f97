"""Trigger declarations for the counters (SPEC §4), used in the models' ``Meta.triggers``.

Every counter trigger is statement-level with a transition table: the statement's rows are grouped
into one delta per counter row and handed to the functions in ``usage/sql/`` (one file each). A
100,000-row INSERT therefore costs one aggregate and one locked update per customer, not 100,000
upserts. Function names follow ``pgtrigger_<name>_<hash>``; ``manage.py check_triggers`` checks them.
"""

import pgtrigger

from usage.names import render

# Trigger bodies name only the product's tables: rendered with no other table's columns to avoid (the
# models are still loading when they are declared).
_PRODUCT_ONLY: dict[str, set[str]] = {}

NEW = "new_rows"
OLD = "old_rows"


def statement_trigger(name, operation, func, *, old=False, new=False):
    return pgtrigger.Trigger(
        name=name,
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=operation,
        referencing=pgtrigger.Referencing(old=OLD if old else None, new=NEW if new else None)
        if (old or new)
        else None,
        func=render(func.strip() + "\nRETURN NULL;", other_columns=_PRODUCT_ONLY),
    )


def _protect(name, operation, writes_counter):
    """Refuse client writes of derived counters outside the recount functions (I5).

    usage_counter_writes_granted() is true only inside the SECURITY DEFINER recount functions (its
    file says which) and the owner's counter_writes_allowed(): no setting a client can set opens it.

    The WHEN clause stays minimal: PostgreSQL prepares it again for every statement, and the counter
    triggers' own updates (depth >= 1) should pay nothing more. The column test is in the body.
    """
    return pgtrigger.Trigger(
        name=name,
        level=pgtrigger.Row,
        when=pgtrigger.Before,
        operation=operation,
        condition=pgtrigger.Condition("pg_trigger_depth() = 0"),
        func=render(
            f"""
IF NOT ({writes_counter}) OR usage_counter_writes_granted() THEN
    RETURN NEW;
END IF;
RAISE EXCEPTION 'usage counters on % are maintained by triggers and cannot be written directly', TG_TABLE_NAME
    USING ERRCODE = 'check_violation',
          HINT = 'Write the source rows (projects, usage_events, preset_usage), or recount: manage.py reconcile_usage --apply.';
""",
            other_columns=_PRODUCT_ONLY,
        ),
    )


# --- projects -> usage_tracking.active_projects_count (I1) ------------------------------------------


def _active_delta(select_deltas: str) -> str:
    return f"""
PERFORM usage_tracking_add_active(array_agg(customer_id ORDER BY customer_id), array_agg(delta ORDER BY customer_id))
FROM ({select_deltas}) AS deltas;
"""


def project_triggers():
    return [
        statement_trigger(
            "projects_on_insert",
            pgtrigger.Insert,
            _active_delta(
                f"SELECT customer_id, count(*)::integer AS delta FROM {NEW} WHERE status = 'active' GROUP BY customer_id"
            ),
            new=True,
        ),
        statement_trigger(
            "projects_on_update",
            pgtrigger.Update,
            _active_delta(
                f"""SELECT customer_id, sum(delta)::integer AS delta FROM (
    SELECT customer_id, -1 AS delta FROM {OLD} WHERE status = 'active'
    UNION ALL
    SELECT customer_id, 1 AS delta FROM {NEW} WHERE status = 'active'
) AS moves GROUP BY customer_id HAVING sum(delta) <> 0"""
            ),
            old=True,
            new=True,
        ),
        statement_trigger(
            "projects_on_delete",
            pgtrigger.Delete,
            _active_delta(
                f"SELECT customer_id, -count(*)::integer AS delta FROM {OLD} WHERE status = 'active' GROUP BY customer_id"
            ),
            old=True,
        ),
        statement_trigger(
            "projects_on_truncate",
            pgtrigger.Truncate,
            """
UPDATE usage_tracking SET active_projects_count = 0, updated_at = now()
WHERE active_projects_count <> 0 AND usage_period_current(period_start, period_end);
""",
        ),
    ]


# --- usage_events -> usage_tracking.ai_interactions_count / minutes_used (I2) ---------------------


def _event_deltas(table: str, sign: str) -> str:
    """Per (customer, period containing occurred_at) sums of one transition table.

    The period of most events is the customer's current one, found once per customer; only the
    others (late or historical events) look their period up one by one.
    """
    return f"""
SELECT e.customer_id, p.period_start, p.period_end,
       {sign}coalesce(sum(e.quantity) FILTER (WHERE e.metric = 'ai_interaction'), 0) AS ai,
       {sign}coalesce(sum(e.quantity) FILTER (WHERE e.metric = 'minutes'), 0) AS minutes
FROM {table} AS e
LEFT JOIN (
    SELECT c.customer_id, cp.period_start, cp.period_end
    FROM (SELECT DISTINCT customer_id FROM {table}) AS c
    CROSS JOIN LATERAL usage_period_at(c.customer_id, now()) AS cp
) AS cur ON cur.customer_id = e.customer_id
CROSS JOIN LATERAL (
    SELECT cur.period_start, cur.period_end
    WHERE e.occurred_at >= cur.period_start AND e.occurred_at < cur.period_end
    UNION ALL
    SELECT q.period_start, q.period_end FROM usage_period_at(e.customer_id, e.occurred_at) AS q
    WHERE NOT coalesce(e.occurred_at >= cur.period_start AND e.occurred_at < cur.period_end, false)
) AS p
GROUP BY e.customer_id, p.period_start, p.period_end"""


def _metered_delta(select_deltas: str) -> str:
    return f"""
PERFORM usage_tracking_add(
    array_agg(customer_id ORDER BY customer_id, period_start),
    array_agg(period_start ORDER BY customer_id, period_start),
    array_agg(period_end ORDER BY customer_id, period_start),
    NULL,
    array_agg(ai ORDER BY customer_id, period_start),
    array_agg(minutes ORDER BY customer_id, period_start))
FROM ({select_deltas}) AS deltas;
"""


# One inserted event (the product's usual statement, and every consume) goes straight onto the period
# row that holds its occurred_at, when there is one: what usage_period_at would pick first, without
# the general path's joins. Everything else (bulk, no row yet) takes the general path.
_ONE_EVENT = f"""
IF (SELECT count(*) FROM (SELECT 1 FROM {NEW} LIMIT 2) AS two) = 1 THEN
    UPDATE usage_tracking t
    SET ai_interactions_count = t.ai_interactions_count
            + CASE WHEN e.metric = 'ai_interaction' THEN e.quantity ELSE 0 END,
        minutes_used = t.minutes_used + CASE WHEN e.metric = 'minutes' THEN e.quantity ELSE 0 END,
        updated_at = now()
    FROM {NEW} AS e
    WHERE t.customer_id = e.customer_id AND t.period_start <= e.occurred_at AND t.period_end > e.occurred_at;
    IF FOUND THEN
        RETURN NULL;
    END IF;
END IF;
"""


def usage_event_triggers():
    return [
        statement_trigger(
            "usage_events_on_insert",
            pgtrigger.Insert,
            _ONE_EVENT + _metered_delta(_event_deltas(NEW, "")),
            new=True,
        ),
        statement_trigger(
            "usage_events_on_update",
            pgtrigger.Update,
            _metered_delta(
                f"""SELECT customer_id, period_start, period_end, sum(ai) AS ai, sum(minutes) AS minutes FROM (
{_event_deltas(OLD, "-")}
UNION ALL
{_event_deltas(NEW, "")}
) AS moves GROUP BY customer_id, period_start, period_end HAVING sum(ai) <> 0 OR sum(minutes) <> 0"""
            ),
            old=True,
            new=True,
        ),
        statement_trigger(
            "usage_events_on_delete", pgtrigger.Delete, _metered_delta(_event_deltas(OLD, "-")), old=True
        ),
        statement_trigger(
            "usage_events_on_truncate",
            pgtrigger.Truncate,
            """
UPDATE usage_tracking SET ai_interactions_count = 0, minutes_used = 0, updated_at = now()
WHERE ai_interactions_count <> 0 OR minutes_used <> 0;
""",
        ),
    ]


# --- preset_usage -> presets.usage_count / last_used_at (I3) --------------------------------------


def _preset_delta(select_deltas: str) -> str:
    return f"""
PERFORM usage_presets_add(
    array_agg(preset_id ORDER BY preset_id), array_agg(delta ORDER BY preset_id),
    array_agg(last_used ORDER BY preset_id), array_agg(recount ORDER BY preset_id))
FROM ({select_deltas}) AS deltas;
"""


_PRESET_USES_ADDED = f"SELECT preset_id, count(*)::integer AS delta, max(used_at) AS last_used, false AS recount FROM {NEW} GROUP BY preset_id"
_PRESET_USES_REMOVED = f"SELECT preset_id, -count(*)::integer AS delta, NULL::timestamptz AS last_used, true AS recount FROM {OLD} GROUP BY preset_id"


def preset_usage_triggers():
    return [
        statement_trigger(
            "preset_usage_on_insert", pgtrigger.Insert, _preset_delta(_PRESET_USES_ADDED), new=True
        ),
        statement_trigger(
            "preset_usage_on_update",
            pgtrigger.Update,
            _preset_delta(
                f"""SELECT preset_id, sum(delta)::integer AS delta, max(last_used) AS last_used, bool_or(recount) AS recount
FROM ({_PRESET_USES_REMOVED} UNION ALL {_PRESET_USES_ADDED}) AS moves GROUP BY preset_id"""
            ),
            old=True,
            new=True,
        ),
        statement_trigger(
            "preset_usage_on_delete", pgtrigger.Delete, _preset_delta(_PRESET_USES_REMOVED), old=True
        ),
        statement_trigger(
            "preset_usage_on_truncate",
            pgtrigger.Truncate,
            """
UPDATE presets SET usage_count = 0, last_used_at = NULL
WHERE usage_count <> 0 OR last_used_at IS NOT NULL;
""",
        ),
    ]


# --- guards on the counter tables (I5) -------------------------------------------------------------


def preset_triggers():
    return [
        _protect(
            "presets_protect_insert", pgtrigger.Insert, "NEW.usage_count <> 0 OR NEW.last_used_at IS NOT NULL"
        ),
        _protect(
            "presets_protect_update",
            pgtrigger.Update,
            "OLD.usage_count IS DISTINCT FROM NEW.usage_count OR OLD.last_used_at IS DISTINCT FROM NEW.last_used_at",
        ),
    ]


_NOT_A_CASCADE = "pg_trigger_depth() = 0"  # the database's cascade from customers runs at depth 1


def _protect_delete():
    """A usage period row goes only with its customer (I5, SPEC §10): the app role could DELETE it.

    Deferred to the commit: Django's cascade (Customer.delete, the admin's delete) and a product
    that deletes a customer's rows before the customer both delete the periods first, in the same
    transaction. The WHEN clause is evaluated at the DELETE itself, so the database's own cascade
    from customers (depth 1) queues nothing. No function deletes a period (a recount rewrites it), so
    no grant opens this guard: a period whose customer is still there at the commit was deleted by hand.
    """
    return pgtrigger.Trigger(
        name="usage_tracking_protect_delete",
        level=pgtrigger.Row,
        when=pgtrigger.After,
        operation=pgtrigger.Delete,
        timing=pgtrigger.Deferred,
        condition=pgtrigger.Condition(_NOT_A_CASCADE),
        func=render(
            """
IF EXISTS (SELECT 1 FROM customers c WHERE c.id = OLD.customer_id) THEN
    RAISE EXCEPTION 'usage period % of customer % was deleted without its customer: usage periods are deleted only with their customer', OLD.month, OLD.customer_id
        USING ERRCODE = 'check_violation',
              HINT = 'Delete the customer (its periods go with it); a wrong counter is recounted by manage.py reconcile_usage --apply.';
END IF;
RETURN NULL;
""",
            other_columns=_PRODUCT_ONLY,
        ),
    )


def _month_changed(name, operation, row, condition):
    """Note the month of a past period that changed (usage_months_changed: its latest change). A row
    trigger whose WHEN is false for every counter update of a current period, so the counters' path
    pays one comparison per row and never calls it. ON CONFLICT DO UPDATE locks the month's row, so a
    summary being rebuilt (which deletes that row first) either waits for this change and sees it, or
    leaves the row for the next build."""
    return pgtrigger.Trigger(
        name=name,
        level=pgtrigger.Row,
        when=pgtrigger.After,
        operation=operation,
        condition=pgtrigger.Condition(render(condition, other_columns=_PRODUCT_ONLY)),
        func=render(
            f"""
INSERT INTO usage_months_changed AS m (period_month, changed_at) VALUES ({row}.month, now())
ON CONFLICT (period_month) DO UPDATE SET changed_at = excluded.changed_at;
RETURN NULL;
""",
            other_columns=_PRODUCT_ONLY,
        ),
    )


# A period of a month before this one (UTC months: usage_tracking.month).
_PAST_MONTH = "{row}.period_start < date_trunc('month', now(), 'UTC')"


def usage_tracking_triggers():
    return [
        # Late writes to ended periods, and periods of past months opened or deleted.
        _month_changed("usage_tracking_ended_update", pgtrigger.Update, "OLD", "(OLD.period_end <= now())"),
        _month_changed(
            "usage_tracking_past_insert", pgtrigger.Insert, "NEW", f"({_PAST_MONTH.format(row='NEW')})"
        ),
        _month_changed(
            "usage_tracking_past_delete", pgtrigger.Delete, "OLD", f"({_PAST_MONTH.format(row='OLD')})"
        ),
        _protect_delete(),
        # Period rows are opened by the counter triggers or by the period services, never by hand.
        _protect("usage_tracking_protect_insert", pgtrigger.Insert, "true"),
        _protect(
            "usage_tracking_protect_update",
            pgtrigger.Update,
            "(OLD.customer_id, OLD.period_start, OLD.period_end, OLD.active_projects_count,"
            " OLD.ai_interactions_count, OLD.minutes_used) IS DISTINCT FROM (NEW.customer_id, NEW.period_start,"
            " NEW.period_end, NEW.active_projects_count, NEW.ai_interactions_count, NEW.minutes_used)",
        ),
    ]
