"""Trigger declarations for credit_grants.remaining (SPEC §4, I4), used in the models' Meta.triggers.

The same mechanism as the usage counters (usage/triggers.py): statement-level AFTER triggers on the
ledger (credit_draws) aggregate each statement into one delta per grant and hand it to
billing_credit_grants_add (billing/sql), which moves ``remaining`` by that delta on rows locked in id
order. A BEFORE guard makes ``remaining`` start at ``granted`` and refuses client writes to either.
"""

import pgtrigger

from usage.names import column
from usage.triggers import NEW, OLD, statement_trigger


def _grant_delta(select_deltas: str) -> str:
    return f"""
PERFORM billing_credit_grants_add(array_agg(grant_id ORDER BY grant_id), array_agg(drawn ORDER BY grant_id))
FROM ({select_deltas}) AS deltas;
"""


def credit_draw_triggers():
    return [
        statement_trigger(
            "credit_draws_on_insert",
            pgtrigger.Insert,
            _grant_delta(f"SELECT grant_id, sum(quantity) AS drawn FROM {NEW} GROUP BY grant_id"),
            new=True,
        ),
        statement_trigger(
            "credit_draws_on_update",
            pgtrigger.Update,
            _grant_delta(
                f"""SELECT grant_id, sum(drawn) AS drawn FROM (
    SELECT grant_id, -quantity AS drawn FROM {OLD}
    UNION ALL
    SELECT grant_id, quantity AS drawn FROM {NEW}
) AS moves GROUP BY grant_id HAVING sum(drawn) <> 0"""
            ),
            old=True,
            new=True,
        ),
        statement_trigger(
            "credit_draws_on_delete",
            pgtrigger.Delete,
            _grant_delta(f"SELECT grant_id, -sum(quantity) AS drawn FROM {OLD} GROUP BY grant_id"),
            old=True,
        ),
        statement_trigger(
            "credit_draws_on_truncate",
            pgtrigger.Truncate,
            "UPDATE credit_grants SET remaining = granted WHERE remaining <> granted;",
        ),
    ]


_REFUSE = """
RAISE EXCEPTION 'credit_grants.remaining is kept by triggers from credit_draws and cannot be written directly'
    USING ERRCODE = 'check_violation',
          HINT = 'Grant new credit (a new credit_grants row), or recount: manage.py reconcile_usage --apply.';
"""


def credit_grant_triggers():
    return [
        pgtrigger.Trigger(
            name="credit_grants_start_full",
            level=pgtrigger.Row,
            when=pgtrigger.Before,
            operation=pgtrigger.Insert,
            func="""
IF usage_counter_writes_granted() THEN
    RETURN NEW;
END IF;
NEW.remaining := NEW.granted;  -- nothing has been drawn from a new grant
RETURN NEW;
""",
        ),
        pgtrigger.Trigger(
            name="credit_grants_protect_update",
            level=pgtrigger.Row,
            when=pgtrigger.Before,
            operation=pgtrigger.Update,
            condition=pgtrigger.Condition("pg_trigger_depth() = 0"),
            func=f"""
IF (OLD.remaining = NEW.remaining AND OLD.granted = NEW.granted)
   OR usage_counter_writes_granted() THEN
    RETURN NEW;
END IF;
{_REFUSE}""",
        ),
    ]


# --- subscriptions -> usage_tracking.plan_id (the plan in effect for each period, SPEC §7 Finance) ---

# What makes a customer's live plan (billing_live_by_customer): the subscription's customer, plan and
# status. A renewal (new period bounds on the same plan) fires nothing: the WHEN clause decides.
_PLAN_MOVED = (
    "((OLD.customer_id, OLD.plan_id, OLD.status) IS DISTINCT FROM (NEW.customer_id, NEW.plan_id, NEW.status))"
)


def _period_plans(name, when, function, operation, condition=None):
    """Row triggers that call ``function`` for the customer before and after the row (both, when a
    subscription moves between customers). Plan changes are rare writes; the counters' path never
    meets them (they fire on subscriptions, and plan_id is in no index of usage_tracking)."""
    return pgtrigger.Trigger(
        name=name,
        level=pgtrigger.Row,
        when=when,
        operation=operation,
        condition=condition,
        func=f"""
IF TG_OP <> 'INSERT' THEN
    PERFORM {function}(OLD.customer_id);
END IF;
IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.customer_id IS DISTINCT FROM OLD.customer_id) THEN
    PERFORM {function}(NEW.customer_id);
END IF;
RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
""",
    )


def subscription_triggers():
    """Before the live plan changes, the customer's ended periods not stamped yet keep the plan they
    had (billing_period_plans_freeze); after, the periods not ended take the new one
    (billing_period_plans_restamp)."""
    freeze, restamp = "billing_period_plans_freeze", "billing_period_plans_restamp"
    insert_delete = pgtrigger.Insert | pgtrigger.Delete
    return [
        _period_plans("subscriptions_period_plans_freeze", pgtrigger.Before, freeze, insert_delete),
        _period_plans(
            "subscriptions_period_plans_freeze_update",
            pgtrigger.Before,
            freeze,
            pgtrigger.Update,
            pgtrigger.Condition(_PLAN_MOVED),
        ),
        _period_plans("subscriptions_period_plans_restamp", pgtrigger.After, restamp, insert_delete),
        _period_plans(
            "subscriptions_period_plans_restamp_update",
            pgtrigger.After,
            restamp,
            pgtrigger.Update,
            pgtrigger.Condition(_PLAN_MOVED),
        ),
    ]


# --- plans -> the month summaries (billing_usage_months) ---------------------------------------------

# Every summarized month noted changed (usage_months_changed), so the pages sum it from the periods
# until cron summarizes it again: what a statement that may touch any month does (a plan edited, the
# periods truncated).
_EVERY_SUMMARIZED_MONTH_CHANGED = """
INSERT INTO usage_months_changed AS m (period_month, changed_at)
SELECT s.period_month, now() FROM billing_usage_months s
ON CONFLICT (period_month) DO UPDATE SET changed_at = excluded.changed_at;
RETURN NULL;
"""


def plan_triggers():
    """A plan edited (its allowances, its code) after months were summarized with it: each summarized
    month is noted as changed (usage_months_changed), so the pages compute it from the periods with
    the plan as it is now, as usage_report does, until cron summarizes it again."""
    return [
        pgtrigger.Trigger(
            name="plans_summaries_changed",
            level=pgtrigger.Statement,
            when=pgtrigger.After,
            operation=pgtrigger.Update | pgtrigger.Delete,
            func=_EVERY_SUMMARIZED_MONTH_CHANGED,
        )
    ]


# --- usage_tracking.plan_id: stamped as each period opens (SPEC §7 Finance) ---------------------------


def usage_period_triggers():
    """Billing's triggers on the product's usage_tracking (declared on billing's proxy model
    ``UsagePeriodPlan``: usage never knows of plans). Every period is stamped with the customer's live
    plan as it opens, whoever opens it: the counters' triggers (an event or project statement, one row
    or a bulk one opening many periods), consume's lazy open, a rollover or a renewal (all insert through
    usage_tracking_add or usage_tracking_open). An INSERT that names its plan keeps it; the WHEN clause
    keeps the counters' path (UPDATEs) out of it. The plan is read by billing_period_plan_open
    (SECURITY DEFINER: an adopted product's own role opens periods and cannot read the plans)."""
    customer = column("usage_tracking", "customer_id")
    return [
        pgtrigger.Trigger(
            name="usage_tracking_plan_stamp",
            level=pgtrigger.Row,
            when=pgtrigger.Before,
            operation=pgtrigger.Insert,
            condition=pgtrigger.Condition("NEW.plan_id IS NULL"),
            func=f"""
NEW.plan_id := billing_period_plan_open(NEW.{customer});
RETURN NEW;
""",
        ),
        # The stamp is not the app's to write (SPEC §10, like the counters, I5): only the opening above,
        # the subscriptions' triggers (depth >= 1) and the owner's granted transactions move it. UPDATE OF
        # plan_id: a statement that does not name the column (every counter update) never fires it.
        pgtrigger.Trigger(
            name="usage_tracking_protect_plan",
            level=pgtrigger.Row,
            when=pgtrigger.Before,
            operation=pgtrigger.UpdateOf("plan_id"),
            condition=pgtrigger.Condition(
                "pg_trigger_depth() = 0 AND OLD.plan_id IS DISTINCT FROM NEW.plan_id"
            ),
            func="""
IF usage_counter_writes_granted() THEN
    RETURN NEW;
END IF;
RAISE EXCEPTION 'usage_tracking.plan_id is the plan in effect for the period, stamped as it opens and kept by the subscriptions'' triggers: it cannot be written directly'
    USING ERRCODE = 'check_violation',
          HINT = 'Change the subscription (its plan or status): the periods that have not ended follow it.';
""",
        ),
        # TRUNCATE fires no row trigger, so usage 0022's triggers note no month: every summarized month
        # is noted changed here, and is summed from the periods (none now) until summarized again.
        pgtrigger.Trigger(
            name="usage_tracking_truncate_summaries_changed",
            level=pgtrigger.Statement,
            when=pgtrigger.After,
            operation=pgtrigger.Truncate,
            func=_EVERY_SUMMARIZED_MONTH_CHANGED,
        ),
    ]
