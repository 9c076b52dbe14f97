"""The benchmarks' data: 1M customers, 5M projects, 20M usage events at scale 1, in minutes.

One generator for bench/admin.py, bench/finance.py and bench/integrity.py. Set-based SQL over
generate_series, written in a session of its own as the schema's owner, with every trigger off in that
session only (``session_replication_role = replica``: the counter triggers, the counter guard, the
foreign-key checks; other sessions keep theirs). The source rows (projects, usage events, preset uses,
credit draws) are loaded first, the big tables without their indexes (rebuilt after the load, a sort
each instead of a random B-tree insert per row), then every counter is built in bulk from them
(usage_tracking, presets, credit_grants.remaining) so it equals the truth. A sample goes through the
discrepancy report to check that. Drift is then planted in a few customers on purpose.

Distributions, per customer (``n`` is the customer's number, the random draws are seeded):

- plans 50 % Free, 25 % Starter, 15 % Growth, 10 % Pro (the demo's); 10 % of the Free customers have
  no subscription row at all; subscriptions 88 % active, 5 % trialing, 4 % past due, 3 % canceled
  (their live plan is Free); paid plans through Stripe (60 %), Paddle (25 %) or manual (15 %), each
  processor's period anchored on a day of the month, calendar months otherwise;
- ``projects_per`` projects on average (0 to twice that), active up to the live plan's limit, the rest
  archived; 1 in 500 customers over the project limit by 1 to 3;
- ``periods`` usage periods (monthly, the current one included) with their ``usage_tracking`` rows;
  ``events_per`` usage events on average (0 to twice that), AI interactions and transcription minutes,
  spread over the periods so each period's usage is a share of the plan's allowance (unlimited counted
  as 2,000): 1 in 200 customers at 120 % of it (over a limit);
- presets (0 to 3) with 0 to 5 uses each; credit for 1 in 20 customers (purchased minutes or goodwill
  AI interactions, some expired), drawn by usage, some refunded;
- webhook events for processor subscriptions (created, paid per period, some ignored, 1 in 200 failed,
  some of those in the last day), audit rows (credit grants, plan changes, webhook effects), twelve
  weeks of daily report and weekly reconciliation runs;
- drift planted in 1 in ``drift_every`` customers (active projects +1, the previous period's minutes
  +5, a preset use lost): the dashboard, the report and reconciliation have something to find.

    from dataset import generate
    generate(100_000)   # in a benchmark database (bench/common.py), progress on stderr
"""

import sys
import time
from dataclasses import dataclass, field

from django.db import connections

from demo.data import plans_ensure

TABLE = "bench_dataset"  # what was generated, so a kept database is reused only at the same size
# Loaded without their indexes (no foreign key points at them, so their keys can go too).
BIG_TABLES = (
    "subscriptions",
    "projects",
    "usage_events",
    "preset_usage",
    "usage_tracking",
    "credit_draws",
    "webhook_events",
    "audit_log",
)


@dataclass
class Params:
    customers: int
    projects_per: int = 5
    events_per: int = 20
    periods: int = 3
    drift_every: int = 1000

    def key(self) -> str:
        return (
            f"customers={self.customers} projects_per={self.projects_per} events_per={self.events_per} "
            f"periods={self.periods} drift_every={self.drift_every}"
        )


@dataclass
class Generated:
    params: Params
    seconds: float
    rows: dict = field(default_factory=dict)
    drifted_customers: int = 0


class Progress:
    """Steps on stderr: a bar redrawn in place on a terminal, one line per step otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()

    def _elapsed(self):
        return time.perf_counter() - self.started

    def step(self, label: str, done: int | None = None, total: int | None = None):
        if done is not None and total:
            width = 30
            filled = int(width * done / total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}"
            line = f"{self._elapsed():7.1f} s  {label} {bar}"
            if self.tty:
                end = "\n" if done >= total else ""
                print(f"\r\033[K{line}", end=end, file=sys.stderr, flush=True)
                return
            if done < total:
                return  # not a terminal: only the finished step
        else:
            line = f"{self._elapsed():7.1f} s  {label}"
        print(line, file=sys.stderr, flush=True)


def dataset_kept(params: Params) -> bool:
    """Whether the benchmark database already holds a complete dataset of exactly these parameters."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [TABLE])
        if not cursor.fetchone()[0]:
            return False
        cursor.execute(
            f"SELECT count(*) FROM {TABLE} WHERE params = %s AND finished_at IS NOT NULL", [params.key()]
        )
        return cursor.fetchone()[0] > 0


def datasets_other(params: Params) -> list[str]:
    """The parameters of the complete datasets this database holds that are not ``params``."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [TABLE])
        if not cursor.fetchone()[0]:
            return []
        cursor.execute(
            f"SELECT DISTINCT params FROM {TABLE} WHERE params <> %s AND finished_at IS NOT NULL ORDER BY 1",
            [params.key()],
        )
        return [row[0] for row in cursor.fetchall()]


def prepare(params: Params, *, reuse: bool) -> bool:
    """The benchmark database for ``params``: kept as it is (migrated to the code as it is now) when
    ``reuse`` and it already holds exactly that dataset; else rebuilt empty. True when kept.

    With ``reuse``, a database holding a dataset of other parameters is refused, not wiped (a 1M
    dataset takes half an hour to build again): SystemExit saying what it holds."""
    from django.core.management import call_command

    if reuse and not dataset_kept(params) and (others := datasets_other(params)):
        name = connections["default"].settings_dict["NAME"]
        raise SystemExit(
            f"--reuse: {name} holds a dataset generated with {'; '.join(others)}, not {params.key()}. "
            "Nothing was changed. Run with the parameters it was generated with (e.g. --scale, --periods), "
            "or point EMBEDDED_DBNAME at another database, or run without --reuse to rebuild this one."
        )
    if reuse and dataset_kept(params):
        name = connections["default"].settings_dict["NAME"]
        print(
            f"reusing the dataset kept in {name} ({params.key()}); migrating ...", file=sys.stderr, flush=True
        )
        call_command("migrate", verbosity=0)
        return True
    from common import fresh_bench_schema

    fresh_bench_schema()
    return False


def generate(
    customers: int,
    *,
    projects_per: int = 5,
    events_per: int = 20,
    periods: int = 3,
    drift_every: int = 1000,
    seed: float = 0.42,
    verify_sample: int = 2000,
) -> Generated:
    """Fill an empty, migrated benchmark database; see the module's docstring for what it holds."""
    params = Params(customers, projects_per, events_per, periods, drift_every)
    if periods < 1 or customers < 1:
        raise ValueError("customers and periods must be at least 1")
    plans_ensure()  # the demo's catalogue, through the ORM (the default connection)
    progress = Progress()
    started = time.perf_counter()
    # A connection of its own: the session settings below never leak into the caller's connection.
    conn = connections.create_connection("default")
    conn.ensure_connection()
    conn.set_autocommit(True)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            if not cursor.fetchone()[0]:
                raise RuntimeError(
                    "the generator turns the triggers off in its own session: connect as the schema's owner "
                    "(a superuser), as the embedded server does"
                )
            run = _Run(cursor, progress, params)
            cursor.execute(
                "SELECT set_config('session_replication_role', 'replica', false), "
                "set_config('synchronous_commit', 'off', false), set_config('work_mem', '256MB', false), "
                "set_config('maintenance_work_mem', '1GB', false), set_config('TimeZone', 'UTC', false), "
                "setseed(%s)",
                [seed],
            )
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (params text, started_at timestamptz, finished_at timestamptz)"
            )
            cursor.execute(f"INSERT INTO {TABLE} VALUES (%s, now(), NULL)", [params.key()])
            run.all()
            cursor.execute(f"UPDATE {TABLE} SET finished_at = now() WHERE params = %s", [params.key()])
            rows = run.rows
    finally:
        conn.close()
    result = Generated(params, time.perf_counter() - started, rows, run.drifted)
    _verify(result, verify_sample, progress)
    progress.step(
        "generated "
        + ", ".join(f"{n:,} {table}" for table, n in rows.items())
        + f" in {result.seconds:.0f} s"
    )
    return result


class _Run:
    def __init__(self, cursor, progress: Progress, params: Params):
        self.cursor = cursor
        self.progress = progress
        self.p = params
        self.rows: dict[str, int] = {}
        self.drifted = 0

    def sql(self, statement, params=None):
        self.cursor.execute(statement, params or [])  # always with params: "%%" means "%"
        return self.cursor.fetchall() if self.cursor.description else None

    def step(self, label, statement, params=None, table=None):
        self.sql(statement, params)
        if table:
            self.rows[table] = self.rows.get(table, 0) + self.cursor.rowcount
            label = f"{label}: {self.cursor.rowcount:,} rows"
        self.progress.step(label)

    def chunked(self, label, table, statement, params=None, chunks=20):
        """One INSERT per range of customer numbers ({lo}, {hi}), the bar advancing per chunk."""
        n = self.p.customers
        size = max(1, -(-n // chunks))
        done = 0
        self.progress.step(label, 0, n)
        for lo in range(1, n + 1, size):
            hi = min(n, lo + size - 1)
            self.sql(statement.replace("{lo}", str(lo)).replace("{hi}", str(hi)), params)
            self.rows[table] = self.rows.get(table, 0) + self.cursor.rowcount
            done = hi
            self.progress.step(label, done, n)

    def all(self):
        self.staging()
        self.customers()
        saved = self.indexes_drop()
        try:
            self.subscriptions()
            self.projects()
            self.events()
            self.preset_uses()
            self.credit_draws()
            self.usage_tracking()
            self.presets()
            self.credit_grants()
            self.history()
        finally:
            self.indexes_restore(saved)
        self.drift()
        self.sql("DROP TABLE bench_gen")
        self.sql("DROP TABLE bench_gen_presets")
        for table in (*BIG_TABLES, "customers", "presets", "credit_grants"):
            self.sql(f"VACUUM (ANALYZE) {table}")  # index-only scans need the visibility map
            self.progress.step(f"VACUUM ANALYZE {table}")
        self.sql("ANALYZE")

    # --- one row per customer: everything drawn once, every later statement reads it --------------

    def staging(self):
        p = self.p
        self.sql("DROP TABLE IF EXISTS bench_gen")
        self.step(
            "drawing each customer's plan, status, processor, sizes",
            """
            CREATE UNLOGGED TABLE bench_gen AS
            SELECT x.*,
                   -- the live plan's limits (canceled or no subscription: Free)
                   lp.id AS live_plan_id, lp.max_active_projects AS max_projects,
                   coalesce(lp.ai_interactions_per_period, 2000) AS ai_allowance,
                   coalesce(lp.minutes_per_period, 2000) AS minutes_allowance
            FROM (
                SELECT y.*,
                       CASE WHEN y.has_sub AND y.status <> 'canceled' THEN y.plan ELSE 'free' END AS live,
                       CASE WHEN y.processor = 'manual' THEN 1 ELSE 1 + (y.n * 7) %% 28 END AS anchor
                FROM (
                    SELECT g AS n, gen_random_uuid() AS id,
                           CASE WHEN r1 < 0.5 THEN 'free' WHEN r1 < 0.75 THEN 'starter'
                                WHEN r1 < 0.9 THEN 'growth' ELSE 'pro' END AS plan,
                           NOT (r1 < 0.05) AS has_sub,  -- 10 %% of the Free customers: no row
                           CASE WHEN r2 < 0.88 THEN 'active' WHEN r2 < 0.93 THEN 'trialing'
                                WHEN r2 < 0.97 THEN 'past_due' ELSE 'canceled' END AS status,
                           CASE WHEN r1 < 0.5 OR r3 >= 0.85 THEN 'manual' WHEN r3 < 0.6 THEN 'stripe'
                                ELSE 'paddle' END AS processor,
                           floor(random() * (2 * %s + 1))::int AS n_projects,
                           floor(random() * (2 * %s + 1))::int AS n_events,
                           floor(random() * 4)::int AS n_presets,
                           (CASE WHEN g %% 200 = 3 THEN 1.2 ELSE 0.05 + random() * 0.85 END)::numeric(6, 4) AS usage_share
                    FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3
                          FROM generate_series(1, %s) g) draws
                ) y
            ) x
            JOIN plans lp ON lp.code = x.live
            """,
            [p.projects_per, p.events_per, p.customers],
        )
        self.sql(
            """
            ALTER TABLE bench_gen ADD COLUMN period_start timestamptz, ADD COLUMN n_active int;
            UPDATE bench_gen SET
                period_start = date_trunc('month', now() - (anchor - 1) * interval '1 day', 'UTC')
                               + (anchor - 1) * interval '1 day',
                n_active = CASE WHEN max_projects IS NULL THEN n_projects
                                WHEN n %% 500 = 7 THEN max_projects + 1 + n %% 3  -- over the limit
                                ELSE least(n_projects, max_projects) END;
            ALTER TABLE bench_gen ADD PRIMARY KEY (n);
            """
        )
        self.progress.step("staged")

    def customers(self):
        self.step(
            "customers",
            """
            INSERT INTO customers (id, email, name, current_period_start, current_period_end, created_at)
            SELECT id, (ARRAY['ops', 'billing', 'team', 'hello', 'admin'])[1 + n %% 5] || '.' || n || '@'
                       || (ARRAY['example.com', 'acme.test', 'studio.test', 'mail.test'])[1 + n %% 4],
                   'Customer ' || n, period_start, period_start + interval '1 month',
                   now() - (%s + n %% 700) * interval '1 day'
            FROM bench_gen
            """,
            [31 * self.p.periods],
            table="customers",
        )

    def subscriptions(self):
        self.step(
            "subscriptions",
            """
            INSERT INTO subscriptions (id, customer_id, plan_id, status, processor, external_subscription_id,
                                       external_customer_id, current_period_start, current_period_end,
                                       last_event_at, created_at, updated_at)
            SELECT gen_random_uuid(), b.id, p.id, b.status, b.processor,
                   CASE b.processor WHEN 'stripe' THEN 'sub_bench_' || b.n WHEN 'paddle' THEN 'sub_p_bench_' || b.n END,
                   CASE b.processor WHEN 'stripe' THEN 'cus_bench_' || b.n WHEN 'paddle' THEN 'ctm_bench_' || b.n END,
                   b.period_start, b.period_start + interval '1 month',
                   CASE WHEN b.processor <> 'manual' THEN b.period_start END,
                   b.period_start - (b.n %% 12) * interval '1 month' - interval '1 month', now()
            FROM bench_gen b JOIN plans p ON p.code = b.plan
            WHERE b.has_sub
            """,
            table="subscriptions",
        )

    # --- the big tables: indexes off while loading ------------------------------------------------

    def indexes_drop(self) -> list[tuple[str, str, str]]:
        """Drop the big tables' indexes and index-backed constraints; return how to build them again."""
        saved = []
        for table in BIG_TABLES:
            referenced = self.sql(
                "SELECT conname FROM pg_constraint WHERE contype = 'f' AND confrelid = %s::regclass", [table]
            )
            if referenced:
                raise RuntimeError(f"{table} is referenced by {referenced}: its key cannot be dropped")
            constraints = self.sql(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'x') ORDER BY contype, conname",
                [table],
            )
            indexes = self.sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass) "
                "ORDER BY indexname",
                [table, table],
            )
            for name, definition in constraints:
                saved.append((table, name, f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"))
                self.sql(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            for name, definition in indexes:
                saved.append((table, name, definition))
                self.sql(f"DROP INDEX {name}")
        self.progress.step(f"dropped {len(saved)} indexes of {', '.join(BIG_TABLES)} for the load")
        return saved

    def indexes_restore(self, saved):
        for i, (table, name, statement) in enumerate(saved, 1):
            self.sql(statement)
            self.progress.step(f"rebuilt {table}.{name} ({i}/{len(saved)})")

    def projects(self):
        self.chunked(
            "projects",
            "projects",
            """
            INSERT INTO projects (id, customer_id, name, status, created_at, updated_at)
            SELECT gen_random_uuid(), b.id, 'Project ' || g,
                   CASE WHEN g <= b.n_active THEN 'active' ELSE 'archived' END,
                   now() - ((b.n + g * 37) %% 400) * interval '1 day', now() - ((b.n + g) %% 30) * interval '1 day'
            FROM bench_gen b CROSS JOIN LATERAL generate_series(1, greatest(b.n_projects, b.n_active)) g
            WHERE b.n BETWEEN {lo} AND {hi}
            """,
        )

    def events(self):
        # Event g of a customer falls in period g % periods (0 = the current one) and metric g / periods
        # % 2; its quantity is the customer's share of the allowance over the events of that period and
        # metric, so a period's usage lands near usage_share x allowance. Current-period events are in
        # the past: from the period's start to now.
        self.chunked(
            "usage events",
            "usage_events",
            """
            INSERT INTO usage_events (id, customer_id, metric, quantity, occurred_at, idempotency_key, created_at)
            SELECT gen_random_uuid(), x.id, x.metric, x.quantity, x.at, 'evt-' || x.n || '-' || x.g, x.at
            FROM (
                SELECT b.id, b.n, g, CASE WHEN (g / %(periods)s) %% 2 = 0 THEN 'ai_interaction' ELSE 'minutes' END AS metric,
                       CASE WHEN (g / %(periods)s) %% 2 = 0
                            THEN greatest(1, round(b.usage_share * b.ai_allowance / per.n))
                            ELSE greatest(0.1, round(b.usage_share * b.minutes_allowance / per.n, 1)) END AS quantity,
                       ps.start + random() * (least(ps.start + interval '1 month', now()) - ps.start) AS at
                FROM bench_gen b
                CROSS JOIN LATERAL (SELECT greatest(1, b.n_events / (2 * %(periods)s))::numeric AS n) per
                CROSS JOIN LATERAL generate_series(1, b.n_events) g
                CROSS JOIN LATERAL (SELECT b.period_start - (g %% %(periods)s) * interval '1 month' AS start) ps
                WHERE b.n BETWEEN {lo} AND {hi}
            ) x
            """,
            {"periods": self.p.periods},
        )

    def preset_uses(self):
        self.sql(
            """
            CREATE UNLOGGED TABLE bench_gen_presets AS
            SELECT gen_random_uuid() AS id, b.id AS customer_id, k, floor(random() * 6)::int AS uses
            FROM bench_gen b CROSS JOIN LATERAL generate_series(1, b.n_presets) k
            """
        )
        self.step(
            "preset uses",
            """
            INSERT INTO preset_usage (id, preset_id, customer_id, used_at)
            SELECT gen_random_uuid(), p.id, p.customer_id, now() - random() * interval '90 days'
            FROM bench_gen_presets p CROSS JOIN LATERAL generate_series(1, p.uses) u
            """,
            table="preset_usage",
        )

    def credit_draws(self):
        # Grants for 1 in 20 customers: purchased minutes, goodwill AI interactions; 1 in 7 expired.
        # Their ledger first (usage draws, a refund on 1 in 10); the grants, with remaining from it, later.
        self.sql(
            """
            CREATE UNLOGGED TABLE bench_gen_grants AS
            SELECT gen_random_uuid() AS id, b.id AS customer_id, b.n,
                   CASE WHEN b.n %% 40 = 0 THEN 'minutes' ELSE 'ai_interaction' END AS metric,
                   CASE WHEN b.n %% 40 = 0 THEN 'purchase' ELSE 'goodwill' END AS source,
                   now() - (b.n %% 360) * interval '1 day' AS created_at
            FROM bench_gen b WHERE b.n %% 20 = 0
            """
        )
        self.step(
            "credit draws",
            """
            INSERT INTO credit_draws (grant_id, customer_id, usage_event_id, kind, quantity, drawn_at)
            SELECT g.id, g.customer_id, CASE WHEN x.k < 3 THEN gen_random_uuid() END,
                   CASE WHEN x.k < 3 THEN 'usage' ELSE 'refund' END,
                   CASE WHEN x.k < 3 THEN 10 + x.k ELSE 20 END,
                   least(g.created_at + (x.k + 1) * interval '5 days', now())
            FROM bench_gen_grants g
            CROSS JOIN LATERAL (SELECT k FROM generate_series(0, 3) k WHERE k < 3 OR g.n %% 200 = 0) x
            """,
            table="credit_draws",
        )

    # --- counters from the truth ------------------------------------------------------------------

    def usage_tracking(self):
        # Stored as a live database stores them: a period's row is INSERTed when the period opens
        # (rollover, renewal, first counter), so periods lie in the table in the order they start and
        # a month's periods sit together (a month's scan reads about 1/periods of the heap, by the month
        # index), not each customer's periods side by side (which put every month on every page). Each
        # period is stamped with the plan in effect for it, as it opens (billing_period_roll): the
        # customer's live plan, which the dataset never changes.
        p = self.p
        self.step(
            f"usage periods ({p.periods} per customer), counters from the projects and events",
            """
            INSERT INTO usage_tracking (customer_id, period_start, period_end, month, active_projects_count,
                                        ai_interactions_count, minutes_used, updated_at, plan_id)
            SELECT b.id, ps.start, ps.start + interval '1 month', to_char(ps.start, 'YYYY-MM'),
                   CASE WHEN k = 0 THEN coalesce(a.n, 0) ELSE 0 END, coalesce(e.ai, 0), coalesce(e.minutes, 0),
                   least(ps.start + interval '1 month', now()), b.live_plan_id
            FROM bench_gen b
            CROSS JOIN LATERAL generate_series(0, %s - 1) k
            CROSS JOIN LATERAL (SELECT b.period_start - k * interval '1 month' AS start) ps
            LEFT JOIN (SELECT customer_id, count(*) AS n FROM projects WHERE status = 'active' GROUP BY 1) a
                   ON a.customer_id = b.id AND k = 0
            LEFT JOIN (
                -- the period an event falls in: the customer's anchor day on or before it
                SELECT e.customer_id,
                       date_trunc('month', e.occurred_at - (c.anchor - 1) * interval '1 day', 'UTC')
                           + (c.anchor - 1) * interval '1 day' AS start,
                       sum(e.quantity) FILTER (WHERE e.metric = 'ai_interaction') AS ai,
                       sum(e.quantity) FILTER (WHERE e.metric = 'minutes') AS minutes
                FROM usage_events e JOIN bench_gen c ON c.id = e.customer_id
                GROUP BY 1, 2
            ) e ON e.customer_id = b.id AND e.start = ps.start
            ORDER BY ps.start, b.n  -- the order periods open in: a month's periods stored together
            """,
            [p.periods],
            table="usage_tracking",
        )

    def presets(self):
        self.step(
            "presets, usage counts from their uses",
            """
            INSERT INTO presets (id, customer_id, name, usage_count, last_used_at, created_at)
            SELECT p.id, p.customer_id, (ARRAY['Podcast', 'Interview', 'Meeting notes', 'Lecture'])[1 + p.k %% 4],
                   coalesce(u.n, 0), u.last, now() - interval '120 days'
            FROM bench_gen_presets p
            LEFT JOIN (SELECT preset_id, count(*) AS n, max(used_at) AS last FROM preset_usage GROUP BY 1) u
                   ON u.preset_id = p.id
            """,
            table="presets",
        )

    def credit_grants(self):
        self.step(
            "credit grants, remaining from their ledger",
            """
            INSERT INTO credit_grants (id, customer_id, metric, granted, remaining, source, expires_at,
                                       created_by, reason, external_ref, created_at)
            SELECT g.id, g.customer_id, g.metric, 100, 100 - coalesce(d.drawn, 0), g.source,
                   CASE WHEN g.n %% 140 = 0 THEN g.created_at + interval '60 days' END,
                   CASE WHEN g.source = 'purchase' THEN 'stripe webhook' ELSE 'support' END,
                   CASE WHEN g.source = 'goodwill' THEN 'Outage on ' || to_char(g.created_at, 'YYYY-MM-DD') ELSE '' END,
                   CASE WHEN g.source = 'purchase' THEN 'pi_bench_' || g.n END, g.created_at
            FROM bench_gen_grants g
            LEFT JOIN (SELECT grant_id, sum(quantity) AS drawn FROM credit_draws GROUP BY 1) d ON d.grant_id = g.id
            """,
            table="credit_grants",
        )

    # --- history the admin lists: webhooks, audit, runs -------------------------------------------

    def history(self):
        self.step(
            "webhook events",
            """
            INSERT INTO webhook_events (processor, event_id, event_type, occurred_at, received_at, processed_at,
                                        status, customer_id, outcome, error, attempts, retry_expected,
                                        api_version, payload)
            SELECT b.processor, 'evt_bench_' || b.n || '_' || k, t.type, t.at, t.at + interval '2 seconds',
                   CASE WHEN t.status <> 'failed' THEN t.at + interval '3 seconds' END, t.status, b.id,
                   CASE t.status WHEN 'processed' THEN 'opened the period' WHEN 'ignored' THEN 'older than the last event'
                                 ELSE '' END,
                   CASE WHEN t.status = 'failed' THEN 'no plan has the price price_unknown_' || b.n ELSE '' END,
                   CASE WHEN t.status = 'failed' THEN 3 ELSE 1 END, false, '2024-06-20',
                   jsonb_build_object('id', 'evt_bench_' || b.n || '_' || k, 'type', t.type,
                                      'customer', 'cus_bench_' || b.n)
            FROM bench_gen b
            CROSS JOIN LATERAL generate_series(0, least(%s, 3)) k
            CROSS JOIN LATERAL (
                SELECT CASE WHEN k = 0 THEN 'customer.subscription.created' ELSE 'invoice.paid' END AS type,
                       CASE WHEN (b.n + k) %% 200 = 0 THEN 'failed' WHEN (b.n + k) %% 11 = 0 THEN 'ignored'
                            ELSE 'processed' END AS status,
                       CASE WHEN (b.n + k) %% 1000 = 0 THEN now() - (b.n %% 20) * interval '1 hour'
                            ELSE b.period_start - k * interval '1 month' + interval '1 minute' END AS at
            ) t
            WHERE b.has_sub AND b.processor <> 'manual'
            """,
            [self.p.periods],
            table="webhook_events",
        )
        self.step(
            "audit rows",
            """
            INSERT INTO audit_log (at, actor, action, target_type, target_id, customer_id, before, after, reason)
            SELECT g.created_at, g.created_by, 'credit_grant', 'credit_grant', g.id::text, g.customer_id, NULL,
                   jsonb_build_object('granted', g.granted, 'metric', g.metric), g.reason
            FROM credit_grants g
            UNION ALL
            SELECT now() - (b.n %% 300) * interval '1 day', 'support', 'plan_change', 'subscription', b.id::text, b.id,
                   jsonb_build_object('plan', 'starter'), jsonb_build_object('plan', b.plan), 'customer asked'
            FROM bench_gen b WHERE b.n %% 33 = 0
            UNION ALL
            SELECT w.received_at, w.processor || ' webhook', 'webhook_effect', 'webhook_event', w.event_id, w.customer_id,
                   NULL, jsonb_build_object('period_start', w.occurred_at), ''
            FROM webhook_events w WHERE w.status = 'processed' AND w.id %% 3 = 0
            """,
            table="audit_log",
        )
        self.step(
            "run history: daily reports, weekly reconciliations over twelve weeks",
            """
            INSERT INTO reconciliation_runs (started_at, finished_at, started_by, mode, status, scope,
                customers_checked, customers_with_drift, discrepancies, fixed, summary, error)
            SELECT now() - d * interval '1 day', now() - d * interval '1 day' + interval '3 minutes', 'cron',
                   CASE WHEN d %% 7 = 0 THEN 'apply' ELSE 'report' END, 'completed', 'all customers',
                   %s, d %% 13, d %% 17, CASE WHEN d %% 7 = 0 THEN d %% 17 ELSE 0 END, '{}', ''
            FROM generate_series(1, 84) d
            """,
            [self.p.customers],
            table="reconciliation_runs",
        )
        self.sql("DROP TABLE bench_gen_grants")

    def drift(self):
        """Counters made wrong on purpose in 1 in drift_every customers (the guard is off here)."""
        every = self.p.drift_every
        if not every:
            return
        self.sql(
            """
            UPDATE usage_tracking t SET active_projects_count = active_projects_count + 1
            FROM bench_gen b WHERE b.n %% %s = 1 AND t.customer_id = b.id AND t.period_start = b.period_start
            """,
            [every],
        )
        self.drifted = self.cursor.rowcount
        if self.p.periods > 1:
            self.sql(
                """
                UPDATE usage_tracking t SET minutes_used = minutes_used + 5
                FROM bench_gen b WHERE b.n %% %s = 1 AND t.customer_id = b.id
                                   AND t.period_start = b.period_start - interval '1 month'
                """,
                [every],
            )
        self.sql(
            """
            UPDATE presets p SET usage_count = usage_count - 1
            FROM bench_gen b WHERE b.n %% %s = 1 AND p.customer_id = b.id AND p.usage_count > 0
            """,
            [every],
        )
        self.progress.step(f"drift planted in {self.drifted:,} customers (1 in {every:,})")


def _verify(result: Generated, sample: int, progress: Progress) -> None:
    """The counters equal the truth: a random sample (and a few planted customers) through the report."""
    from billing.ops.integrity import discrepancy_report

    every = result.params.drift_every
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT id::text FROM customers WHERE name = ANY(%s) OR random() < %s",
            [
                [f"Customer {n}" for n in range(1, min(result.params.customers, 20 * every) + 1, every)][:20]
                if every
                else [],
                min(1.0, sample / result.params.customers),
            ],
        )
        ids = [r[0] for r in cursor.fetchall()]
        cursor.execute(
            "SELECT id::text FROM customers WHERE id = ANY(%s::uuid[]) AND (split_part(name, ' ', 2))::int %% %s = 1",
            [ids, every or result.params.customers + 1],
        )
        planted = {r[0] for r in cursor.fetchall()} if every else set()
    report = discrepancy_report(customer_ids=ids, started_by="bench/dataset.py", record=False)
    found = {str(r["customer_id"]) for r in report.rows}
    if found != planted:
        raise AssertionError(
            f"counters differ from the truth: {len(found - planted)} unplanted customers drift "
            f"(e.g. {sorted(found - planted)[:3]}), {len(planted - found)} planted ones do not "
            f"(e.g. {sorted(planted - found)[:3]})"
        )
    progress.step(
        f"verified through the discrepancy report: {len(ids):,} customers, drift exactly in the "
        f"{len(planted):,} planted ones ({len(report.rows):,} counters)"
    )
