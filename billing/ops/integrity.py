"""Discrepancy report and reconciliation (SPEC §6), over every counter check (billing/ops/checks.py).

The checks (usage/services/drift.py, and billing's credit check) write the drifted rows into
``usage_drift``; the report records them as a run. The findings come from billing/ops/findings.py.

Reconciliation first finds the drifted customers with the same checks, then, batch by batch in
customer-id order: locks the counter rows, checks again in a later statement (whose snapshot sees
every write committed before the lock), and sets what still differs to the recomputed truth. Writers
whose triggers wait on those locks add their deltas afterwards, so no concurrent increment is lost.
"""

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from billing.models import RunFinding
from billing.ops.checks import CHECK_GROUPS, drift_scan
from billing.ops.findings import FINDING_CHECKS, Finding, findings_stream
from billing.services.audit import audit_recount
from billing.services.usage_months import usage_months_summarize
from usage.models import Customer, ReconciliationRun
from usage.services.drift import Scan, drift_clear, drift_sql, scan_summary

RECONCILE_LOCK = 0x62696C6C  # pg advisory lock key: one reconciliation at a time
ANOTHER_RUN_ACTIVE = (
    "another reconciliation is running (started {started} by {by}); try again when it has finished"
)


@dataclass
class ReportResult:
    run: ReconciliationRun | None  # None: a read-only role's report, not recorded
    summary: dict
    findings: list  # only materialised without ``emit`` (the admin's selections); commands stream them
    rows: list  # only materialised for small scopes; commands stream instead


FINDINGS_BATCH = 2000  # findings written to the run per INSERT, as they stream


def discrepancy_report(
    *,
    customer_ids=None,
    started_by: str,
    scope: str = "all customers",
    emit: Callable[[Scan, Iterable[Finding]], None] | None = None,
    record: bool = True,
) -> ReportResult:
    """Report every drifted counter and every finding; record the run and its rows (``record``).

    ``record=False`` is for read-only roles (Finance, SPEC §7): the same report, nothing written.

    ``emit(scan, findings)`` is called inside the transaction, while the rows and the findings can be
    streamed (each read once, a chunk at a time: memory stays flat at a million customers); without it
    both are returned as lists (for the admin's small selections).
    """
    with transaction.atomic():
        run = None
        if record:
            run = ReconciliationRun.objects.create(
                started_by=started_by, mode=ReconciliationRun.Mode.REPORT, scope=scope
            )
        scan = drift_scan(customer_ids)
        summary = scan_summary(scan)
        if run is not None:
            _record_rows(run, fixed=False)
        found = _FindingsKept(run)
        stream = found.stream(findings_stream(customer_ids, after_scan=True))
        rows, kept = [], []
        if emit:
            emit(scan, stream)
            for _ in stream:  # what emit left unread is still recorded and counted
                pass
        else:
            kept = list(stream)
            rows = list(scan.rows())
        # Customers (or objects) per finding, kept with the run: the dashboard reads them from here.
        summary["findings"] = found.counts()
        if run is not None:
            _finish(run, scan, summary, fixed=0)
        drift_clear()
    return ReportResult(run, summary, kept, rows)


class _FindingsKept:
    """Findings passing through on their way out: written to the run a batch at a time and counted
    (customers, or objects when a finding has no customer, per check) without keeping them."""

    def __init__(self, run: ReconciliationRun | None):
        self.run = run
        self.batch: list[RunFinding] = []
        self.keys: dict[str, set] = {check: set() for check in FINDING_CHECKS}

    def stream(self, found: Iterable[Finding]) -> Iterator[Finding]:
        for f in found:
            if self.run is None or not f.customer_id:  # not kept with a run: counted here
                self.keys[f.check].add(f.customer_id or f.target_id)
            else:
                self.batch.append(
                    RunFinding(run=self.run, check_name=f.check, customer_id=f.customer_id, detail=f.detail)
                )
                if len(self.batch) >= FINDINGS_BATCH:
                    self._write()
            yield f
        self._write()

    def _write(self) -> None:
        if self.batch:
            RunFinding.objects.bulk_create(self.batch)
            self.batch = []

    def counts(self) -> dict[str, int]:
        kept = {}
        if self.run is not None:
            kept = dict(
                RunFinding.objects.filter(run=self.run)
                .values_list("check_name")
                .annotate(n=Count("customer_id", distinct=True))
                .values_list("check_name", "n")
            )
        return {check: kept.get(check, 0) + len(self.keys[check]) for check in FINDING_CHECKS}


def _record_rows(run: ReconciliationRun, *, fixed: bool) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            drift_sql(
                "INSERT INTO reconciliation_run_rows "
                '(run_id, "check", customer_id, email, target_id, tracked, actual, difference, after, fixed) '
                "SELECT %s, d.check_name, d.customer_id, coalesce(c.email, ''), coalesce(d.target_id, ''), "
                "       d.tracked, d.actual, d.difference, CASE WHEN %s THEN d.actual END, %s "
                "FROM usage_drift d LEFT JOIN customers c ON c.id = d.customer_id"
            ),
            [run.pk, fixed, fixed],
        )


def _finish(run, scan, summary, *, fixed):
    run.customers_checked = scan.customers_checked
    run.customers_with_drift = summary["customers_with_drift"]
    run.discrepancies = summary["discrepancies"]
    run.fixed = fixed
    run.summary = summary
    run.status = ReconciliationRun.Status.COMPLETED
    run.finished_at = timezone.now()
    run.save()


# --- reconciliation ------------------------------------------------------------------------------


@dataclass
class ReconcileResult:
    run: ReconciliationRun | None
    summary: dict
    rows: list = field(default_factory=list)  # the dry run's diff; an apply run's rows are in run.rows
    findings: list = field(default_factory=list)


class ReconciliationBusy(Exception):
    pass


def reconcile_all_start(*, started_by: str) -> subprocess.Popen:
    """Reconcile every customer in the background: ``manage.py reconcile_usage --apply`` in its own
    process and session (batched, checkpointed, one at a time; its run records progress and outcome).

    Raises ReconciliationBusy when a reconciliation is already running.
    """
    with _reconcile_lock():  # refuses now, with who is running, rather than in the background
        pass
    env = dict(os.environ)
    name = connection.settings_dict["NAME"]  # the database this process uses, wherever it lives
    if env.get("DATABASE_URL"):
        env["DATABASE_URL"] = urlunsplit(urlsplit(env["DATABASE_URL"])._replace(path=f"/{name}"))
    else:
        env["EMBEDDED_DBNAME"] = name
    return subprocess.Popen(
        [
            sys.executable,
            str(settings.BASE_DIR / "manage.py"),
            "reconcile_usage",
            "--apply",
            "--started-by",
            started_by,
        ],
        env=env,
        cwd=settings.BASE_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def usage_reconcile(
    *,
    customer_ids=None,
    apply: bool,
    batch_size: int = 1000,
    started_by: str,
    scope: str = "all customers",
    progress: Callable[[int, int], None] | None = None,
    emit: Callable[[Scan, list], None] | None = None,
) -> ReconcileResult:
    """Set every drifted counter in scope to its recomputed truth (``apply``), or show the exact diff.

    Safe while the product writes (see the module docstring); one run at a time (advisory lock);
    each batch commits with its checkpoint, so a killed run leaves whole batches and a rerun converges.
    """
    if batch_size < 1:
        raise ValueError("batch size must be a positive number")
    if not apply:
        result = discrepancy_report(customer_ids=customer_ids, started_by=started_by, scope=scope, emit=emit)
        return ReconcileResult(result.run, result.summary, result.rows, result.findings)

    with _reconcile_lock():
        interrupted = ReconciliationRun.objects.filter(
            mode=ReconciliationRun.Mode.APPLY, status=ReconciliationRun.Status.RUNNING
        ).first()
        if interrupted:  # we hold the lock, so whoever ran it is gone
            interrupted.status = ReconciliationRun.Status.FAILED
            interrupted.error = "interrupted; resumed by a later run"
            interrupted.finished_at = timezone.now()
            interrupted.save(update_fields=["status", "error", "finished_at"])
        run = ReconciliationRun.objects.create(
            started_by=started_by,
            mode=ReconciliationRun.Mode.APPLY,
            scope=scope,
            batch_size=batch_size,
            resumed_from=interrupted,
        )
        try:
            result = _reconcile_batches(run, customer_ids, batch_size, progress)
        except BaseException as exc:
            ReconciliationRun.objects.filter(pk=run.pk).update(
                status=ReconciliationRun.Status.FAILED,
                error=f"{type(exc).__name__}: {exc}",
                finished_at=timezone.now(),
            )
            raise
    # A counter set right in a summarized month noted that month (usage_months_changed): the finance
    # pages compute it from the periods meanwhile; it is summarized again here, as the run ends.
    usage_months_summarize(rebuild_only=True)
    return result


def _reconcile_batches(run, customer_ids, batch_size, progress) -> ReconcileResult:
    # Pass 1 (no locks): which customers drift at all. Pass 2 re-checks each batch under lock.
    with transaction.atomic():
        first = drift_scan(customer_ids)
        customers_checked = first.customers_checked
        drifted = [str(r[0]) for r in _fetch("SELECT DISTINCT customer_id FROM usage_drift ORDER BY 1")]
        drift_clear()
    batches = [drifted[i : i + batch_size] for i in range(0, len(drifted), batch_size)]
    # Progress on the run itself, so the run page can show how far a background run has gone.
    ReconciliationRun.objects.filter(pk=run.pk).update(
        customers_checked=customers_checked, summary={"batches": len(batches), "batches_done": 0}
    )
    for n, batch in enumerate(batches, 1):
        _reconcile_batch(run, batch)
        ReconciliationRun.objects.filter(pk=run.pk).update(
            summary={"batches": len(batches), "batches_done": n}
        )
        if progress:
            progress(n, len(batches))
    run.refresh_from_db()
    totals = {"customers_checked": customers_checked, "discrepancies": run.discrepancies, "fixed": run.fixed}
    totals["customers_with_drift"] = run.rows.values("customer_id").distinct().count()
    with transaction.atomic():
        after = drift_scan(customer_ids)
        summary = {
            **totals,
            "metrics_before": scan_summary(first)["metrics"],
            "remaining_drift": after.discrepancies,
            "batches": len(batches),
            "batches_done": len(batches),
        }
        drift_clear()
    run.refresh_from_db()
    run.customers_checked = customers_checked
    run.customers_with_drift = totals["customers_with_drift"]
    run.summary = summary
    run.status = ReconciliationRun.Status.COMPLETED
    run.finished_at = timezone.now()
    run.save()
    return ReconcileResult(run, summary)


def _reconcile_batch(run, customer_ids) -> None:
    """Lock, re-check, fix: one transaction per check group (see CheckGroup).

    Each commits its fixes together with the run's counts and checkpoint, so a kill never leaves
    them apart.
    """
    for group in CHECK_GROUPS:
        with transaction.atomic():
            _fetch(drift_sql(group.lock_sql), [customer_ids])
            # A later statement than the lock: its snapshot sees every write committed before it.
            scan = drift_scan(customer_ids, groups=(group,))
            found = scan.discrepancies
            fixed = 0
            if found:
                changed = list(scan.rows())
                fixed = group.fix()
                _record_rows(run, fixed=True)
                audit_recount(run=run, rows=changed)  # the audit commits with the fix
            drift_clear()
            ReconciliationRun.objects.filter(pk=run.pk).update(
                discrepancies=F("discrepancies") + found,
                fixed=F("fixed") + fixed,
                last_customer_id=customer_ids[-1],
            )


def _scalar(sql, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def _fetch(sql, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


class _reconcile_lock:
    """Session-level advisory lock: a second reconciliation refuses to start."""

    def __enter__(self):
        if not _scalar("SELECT pg_try_advisory_lock(%s)", [RECONCILE_LOCK]):
            running = ReconciliationRun.objects.filter(
                mode=ReconciliationRun.Mode.APPLY, status=ReconciliationRun.Status.RUNNING
            ).first()
            raise ReconciliationBusy(
                ANOTHER_RUN_ACTIVE.format(
                    started=running.started_at.isoformat(timespec="seconds") if running else "just now",
                    by=running.started_by if running else "someone",
                )
            )
        return self

    def __exit__(self, *exc):
        _scalar("SELECT pg_advisory_unlock(%s)", [RECONCILE_LOCK])
        return False


def customer_recount(*, customer: Customer, started_by: str) -> ReconcileResult:
    """Support's one-click fix: reconcile one customer's counters (recorded as a run)."""
    return usage_reconcile(
        customer_ids=[customer.pk], apply=True, started_by=started_by, scope=customer.email
    )
