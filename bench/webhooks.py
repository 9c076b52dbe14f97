"""Webhook ingestion rate on one process with 10 % duplicates (SPEC §11: at least 500 a second).

Builds a stream of signed Stripe and Paddle events shaped like the processors' (subscription
updates, overage packs, event types we ignore), with 10 % of deliveries repeating an earlier event.
Every round runs on customers and subscriptions of its own with the same stream (same seed).

- **Sequential rounds**, one delivery after another through Django's test client, alternate between
  the Python path (``WEBHOOK_ONE_STATEMENT = False``: handlers and the ORM) and one SQL function call
  per usual delivery (the default): statements and CPU per delivery, old against new.
- **Concurrent rounds** (the SPEC figure): ``--threads`` threads of this one process, each with its
  own database connection kept between requests, call the WSGI application exactly as gunicorn's
  gthread worker does (``--workers 1 --threads N``, gunicorn.conf.py): routing, middleware, request
  signals and the view all run, and parallel deliveries' commits share WAL flushes while PostgreSQL's
  CPU overlaps Python's. Threads in this process rather than a gunicorn process fed over HTTP by a
  client process: on a 2-core machine a client process would take CPU from the server it measures,
  and here the server process's CPU (Python) and its backends' (PostgreSQL) are measured exactly.
  What this leaves out is gunicorn's own HTTP parsing and socket writes, which the next rounds add.
- **gunicorn rounds**: a real ``gunicorn --workers 1 --threads N`` with production's gunicorn.conf.py
  (DEBUG off, its JSON access log; X-Forwarded-Proto from 127.0.0.1 as a TLS proxy sends it) on
  ``--port``, fed over HTTP/1.1 keep-alive by N client connections of this process; the worker's CPU
  and its backends' per delivery, the client's apart (``--no-gunicorn`` skips them).
- **Parallel redeliveries**: each event of a small stream delivered by every thread at the same
  instant must be applied by exactly one of them, leaving the rows the same stream leaves when each
  event is delivered once.

Checks (exit 1 when one fails): every delivery answered 200; every event stored once and every pack
granted once; both sequential paths leave the same statuses, audit rows and grants; every round,
concurrent ones included, leaves each subscription as its newest event says. It also measures what
bounds the rate on this machine, in the same run: one committed single-row INSERT (the WAL flush every
commit waits for) and the request stack alone (a delivery refused for its signature: no database).
The load average (1 min) is printed beside every figure: other processes on the machine lower them.

    .venv/bin/python bench/webhooks.py               # 3,000 deliveries a round, two rounds of each
    .venv/bin/python bench/webhooks.py --deliveries 1500 --rounds 2 --threads 8 --port 8123

Runs in its own database (billing_ops_bench). Progress on stderr; the Markdown table on stdout.
"""

import argparse
import io
import os
import random
import statistics
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from common import ROOT, fresh_bench_schema, log  # sets up Django on the benchmark database
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.utils import timezone

from billing.services.webhooks import signature_header
from demo import webhook_payloads as wp

SECRET = "whsec_bench"


def _statuses(answers: list[dict[int, int]]) -> dict[int, int]:
    """The HTTP statuses the threads' deliveries got, each thread's counts summed."""
    statuses: dict[int, int] = {}
    for share in answers:
        for code, n in share.items():
            statuses[code] = statuses.get(code, 0) + n
    return statuses


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=3000, help="per round")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per path, alternating")
    parser.add_argument(
        "--threads", type=int, default=8, help="threads of the concurrent rounds (gunicorn --threads)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--port", type=int, default=8123, help="where the gunicorn rounds' server listens (127.0.0.1)"
    )
    parser.add_argument(
        "--no-gunicorn", action="store_true", help="skip the rounds against a gunicorn process"
    )
    args = parser.parse_args()
    if not 2 <= args.threads <= 64:
        parser.error("--threads must be 2 to 64")
    fresh_bench_schema()
    settings.STRIPE_WEBHOOK_SECRET = settings.PADDLE_WEBHOOK_SECRET = SECRET
    settings.ALLOWED_HOSTS = ["*"]
    from demo.data import plans_ensure

    plans = plans_ensure()
    client = Client()
    rows = []
    for n in range(2 * args.rounds):
        one_statement = n % 2 == 1
        settings.WEBHOOK_ONE_STATEMENT = one_statement
        rows.append(_round(client, plans, args, tag=f"r{n}", one_statement=one_statement))
    app = _wsgi_application()
    for n in range(args.rounds):
        rows.append(_threaded_round(app, plans, args, tag=f"t{n}"))
    parallel = _parallel_redeliveries(app, plans, args)
    if not args.no_gunicorn:
        server, worker, server_log = _gunicorn_start(args)
        try:
            warm = argparse.Namespace(**{**vars(args), "customers": 20, "deliveries": 20 * args.threads})
            _gunicorn_round(worker, plans, warm, tag="gw")  # each thread's connection, first imports
            for n in range(args.rounds):
                rows.append(_gunicorn_round(worker, plans, args, tag=f"g{n}"))
        finally:
            server.terminate()
            server.wait(30)
        log(f"gunicorn's log: {server_log}")
    commit_us = _commit_floor()
    stack_us = _stack_floor(client)
    connect_us = _connect_cost()

    print(
        f"Webhook ingestion on one process, {os.cpu_count()} cores, {args.deliveries:,} deliveries a round of "
        f"which {args.deliveries - int(args.deliveries * 0.9):,} are redeliveries; the same stream every round.\n\n"
        "- sequential: one delivery after another through Django's test client (the Python path and one "
        "statement alternating)\n"
        f"- threads: {args.threads} threads of this process, each its own kept connection, calling the WSGI "
        "application as gunicorn's gthread worker does\n"
        f"- gunicorn: a real `gunicorn --workers 1 --threads {args.threads}` (gunicorn.conf.py, DEBUG off, "
        f"its JSON access log) fed over HTTP/1.1 keep-alive by {args.threads} client connections of this "
        "process; CPU is the worker process's (the client's is listed apart)\n"
    )
    print(
        "| served by | path | deliveries/s | statements per delivery | HTTP answers | inbox rows (unique events) "
        "| by status | credit grants (packs) | audit rows | CPU per delivery: Python, PostgreSQL "
        "| load average (1 min) |"
    )
    print("|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        served = {"test client": "sequential", "threads": f"{r['threads']} threads", "gunicorn": "gunicorn"}[
            r["server"]
        ]
        statements = "-" if r["statements"] is None else f"{r['statements']:.1f}"
        client = f" (client {r['client_cpu_ms']:.2f} ms)" if "client_cpu_ms" in r else ""
        print(
            f"| {served} | {'one statement' if r['one_statement'] else 'Python'} | {r['rate']:,.0f} "
            f"| {statements} | {r['answers']} | {r['stored']:,} ({r['unique']:,}) | {r['by_status']} "
            f"| {r['grants']:,} ({r['packs']:,}) | {r['audit']:,} "
            f"| {r['cpu_ms']:.2f} ms, {r['backend_cpu_ms']:.2f} ms{client} | {r['load']:.1f} |"
        )
    sequential = [r for r in rows if r["server"] == "test client"]
    old = statistics.median(r["rate"] for r in sequential if not r["one_statement"])
    new = statistics.median(r["rate"] for r in sequential if r["one_statement"])
    summary = [f"sequential: Python path {old:,.0f}, one statement {new:,.0f} ({new / old:.2f}x)"]
    for server, name in (("threads", f"{args.threads} threads in this process"), ("gunicorn", "gunicorn")):
        mine = [r for r in rows if r["server"] == server]
        if mine:
            summary.append(
                f"{name} **{statistics.median(r['rate'] for r in mine):,.0f}** (load average "
                f"{statistics.median(r['load'] for r in mine):.1f})"
            )
    print(f"\nMedian deliveries/s (SPEC §11 asks 500 on one process): {'; '.join(summary)}.")
    print(
        f"Parallel redeliveries: each of {parallel['unique']} events delivered by {args.threads} threads at "
        f"the same instant: answers {parallel['answers']}, applied by exactly one delivery: "
        f"{parallel['applied_once']} of {parallel['unique']}; inbox rows {parallel['stored']}, grants "
        f"{parallel['grants']} ({parallel['packs']} packs), audit rows {parallel['audit']}, statuses "
        f"{parallel['by_status']}: {'the same as' if not parallel['differs'] else 'NOT the same as'} "
        "each delivered once."
    )
    print(
        f"On this machine now: one committed single-row INSERT takes {commit_us:,.0f} us (median of 300; "
        f"the WAL flush every delivery waits for: at most {1e6 / commit_us:,.0f} deliveries/s on one connection), "
        f"the request stack alone (test client, middleware, view, signature refused: no database) "
        f"{stack_us:,.0f} us, opening a connection (what each request paid before DATABASE_CONN_MAX_AGE) "
        f"{connect_us:,.0f} us. Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."
    )
    for r in rows:
        if r["stored"] != r["unique"] or r["grants"] != r["packs"]:
            raise SystemExit("an event was processed more than once, or not at all")
        if set(r["answers"]) != {200}:
            raise SystemExit(f"a delivery was not answered 200: {r['answers']}")
    if len({(tuple(sorted(r["by_status"].items())), r["audit"], r["grants"]) for r in sequential}) != 1:
        raise SystemExit("the two paths left different statuses, audit rows or grants for the same stream")
    if len({tuple(r["subscriptions"]) for r in rows}) != 1:
        raise SystemExit("concurrent rounds left subscriptions other than the newest events say")
    if not parallel["ok"]:
        raise SystemExit(f"parallel deliveries of one event were not applied exactly once: {parallel}")


def _population(plans, args, tag: str):
    """Customers and subscriptions of the round's own, and its stream: unique events, then deliveries."""
    from billing.models import Subscription
    from usage.models import Customer

    rng = random.Random(args.seed)  # the same stream in every round
    now = timezone.now().replace(microsecond=0)
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    customers = Customer.objects.bulk_create(
        Customer(email=f"hook{i}@{tag}.example.com", current_period_start=start, current_period_end=end)
        for i in range(args.customers)
    )
    subs = {}
    for i, customer in enumerate(customers):
        processor = "stripe" if i % 2 == 0 else "paddle"
        subs[customer.pk] = (processor, f"sub_bench_{tag}_{i}")
        Subscription.objects.create(
            customer=customer,
            plan=plans["starter"],
            processor=processor,
            external_subscription_id=f"sub_bench_{tag}_{i}",
            current_period_start=start,
            current_period_end=end,
            last_event_at=start,
        )
    events, unique = _stream(rng, customers, subs, start, end, args.deliveries)
    deliveries = events + [rng.choice(events) for _ in range(args.deliveries - unique)]
    rng.shuffle(deliveries)
    return customers, events, unique, deliveries


def _round(client, plans, args, *, tag: str, one_statement: bool) -> dict:
    customers, events, unique, deliveries = _population(plans, args, tag)
    statuses = {}
    statements = [0]

    def count(execute, sql, params, many, context):  # every statement sent, not BEGIN/COMMIT
        statements[0] += 1
        return execute(sql, params, many, context)

    path = "one statement" if one_statement else "Python path"
    log(f"round {tag} ({path}): posting {len(deliveries):,} deliveries ...")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    cpu_started, backend_started = time.process_time(), _cpu_seconds(backend)
    started = time.perf_counter()
    with connection.execute_wrapper(count):
        for processor, _, data in deliveries:
            response = client.post(
                f"/webhooks/{processor}/",
                data=data,
                content_type="application/json",
                **{f"HTTP_{processor.upper()}_SIGNATURE": signature_header(processor, data, SECRET)},
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    elapsed = time.perf_counter() - started
    cpu, backend_cpu = time.process_time() - cpu_started, _cpu_seconds(backend) - backend_started
    return {
        "one_statement": one_statement,
        "threads": 1,
        "server": "test client",
        "rate": len(deliveries) / elapsed,
        "statements": statements[0] / len(deliveries),
        "answers": statuses,
        "load": os.getloadavg()[0],
        "cpu_ms": cpu / len(deliveries) * 1000,
        "backend_cpu_ms": backend_cpu / len(deliveries) * 1000,
        **_kept(customers, events, unique),
    }


def _wsgi_application():
    """The WSGI application gunicorn's worker calls (billing.wsgi), with production's static files.

    The test settings look WhiteNoise's files up on every request (WHITENOISE_AUTOREFRESH, so the
    suite needs no collectstatic); production scans them once at start. Built after the settings
    change, as a worker builds it at start.
    """
    from django.core.handlers.wsgi import WSGIHandler

    settings.WHITENOISE_AUTOREFRESH = False
    return WSGIHandler()


def _environ(processor: str, data: bytes) -> dict:
    """What gunicorn hands the application for one delivery (HTTP/1.1 POST, keep-alive)."""
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": f"/webhooks/{processor}/",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(data)),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        f"HTTP_{processor.upper()}_SIGNATURE": signature_header(processor, data, SECRET),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(data),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _post(app, environ: dict) -> tuple[int, bytes]:
    status = []
    result = app(environ, lambda s, headers, exc_info=None: status.append(s))
    try:
        body = b"".join(result)
    finally:
        result.close()  # request_finished: what a server does after each response
    return int(status[0].split(" ", 1)[0]), body


def _threaded_round(app, plans, args, *, tag: str) -> dict:
    """The round's deliveries from ``args.threads`` threads of this process, each its own connection.

    As gunicorn's gthread worker serves them (one process, N threads; gunicorn.conf.py): every thread
    calls the WSGI application, so routing, middleware, request signals (the connection's health check
    at each request's start) and the view all run; commits of parallel deliveries share WAL flushes and
    PostgreSQL's CPU overlaps Python's. Not measured here: gunicorn's HTTP parsing and socket writes.
    """
    settings.WEBHOOK_ONE_STATEMENT = True
    customers, events, unique, deliveries = _population(plans, args, tag)
    shares = [deliveries[n :: args.threads] for n in range(args.threads)]
    # Signed before the clock starts (the processor signs, not us); well within the 300 s tolerance.
    environs = [[_environ(processor, data) for processor, _, data in share] for share in shares]
    answers: list[dict] = [{} for _ in shares]
    statements, backends, errors = [0] * len(shares), [0] * len(shares), []
    ready, go = threading.Barrier(len(shares) + 1), threading.Event()

    def serve(n: int) -> None:
        def count(execute, sql, params, many, context):
            statements[n] += 1
            return execute(sql, params, many, context)

        try:
            with connection.cursor() as cursor:  # this thread's connection, kept between requests
                cursor.execute("SELECT pg_backend_pid()")
                backends[n] = cursor.fetchone()[0]
            ready.wait()
            go.wait()
            with connection.execute_wrapper(count):
                for environ in environs[n]:
                    code, _ = _post(app, environ)
                    answers[n][code] = answers[n].get(code, 0) + 1
        except BaseException as exc:  # reported after the round; the round fails its checks
            errors.append(repr(exc))
            raise
        finally:
            backends_cpu[n] = _cpu_seconds(backends[n]) if backends[n] else 0.0
            connection.close()

    backends_cpu = [0.0] * len(shares)
    threads = [threading.Thread(target=serve, args=(n,)) for n in range(len(shares))]
    for thread in threads:
        thread.start()
    ready.wait()
    log(f"round {tag} (one statement, {args.threads} threads): posting {len(deliveries):,} deliveries ...")
    backend_started = sum(_cpu_seconds(pid) for pid in backends)
    cpu_started = time.process_time()
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if errors:
        raise SystemExit(f"round {tag}: a delivery raised: {errors[0]}")
    return {
        "one_statement": True,
        "threads": args.threads,
        "server": "threads",
        "rate": len(deliveries) / elapsed,
        "statements": sum(statements) / len(deliveries),
        "answers": _statuses(answers),
        "load": os.getloadavg()[0],
        "cpu_ms": cpu / len(deliveries) * 1000,
        "backend_cpu_ms": (sum(backends_cpu) - backend_started) / len(deliveries) * 1000,
        **_kept(customers, events, unique),
    }


def _gunicorn_start(args):
    """gunicorn as production runs it (gunicorn.conf.py: its logging, one JSON access line a request),
    one worker of ``args.threads`` threads, on the benchmark's database; behind a TLS proxy as far as
    the app can tell (X-Forwarded-Proto from 127.0.0.1, which gunicorn trusts by default)."""
    import subprocess
    import urllib.request

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "billing.settings",
        "SECRET_KEY": "bench-webhooks-" + "k" * 40,
        "DEBUG": "off",
        "ALLOWED_HOSTS": "127.0.0.1",
        "EMBEDDED_DBNAME": settings.DATABASES["default"]["NAME"],
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "PADDLE_WEBHOOK_SECRET": SECRET,
    }
    if settings.DATABASES["default"]["ENGINE"] != "billing.db.embedded":
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-webhooks-gunicorn-{os.getpid()}.log"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--config",
            str(ROOT / "gunicorn.conf.py"),
            "--workers",
            "1",
            "--threads",
            str(args.threads),
            "--bind",
            f"127.0.0.1:{args.port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),  # its log lines (one per request), as production writes them
        start_new_session=True,
    )
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/healthz", timeout=5):
                break
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"gunicorn exited ({server.returncode}); its log: {log_path}") from None
            time.sleep(0.1)
    else:
        server.terminate()
        raise SystemExit(f"gunicorn did not answer on port {args.port}; its log: {log_path}")
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    if len(children) != 1:
        server.terminate()
        raise SystemExit(f"expected one gunicorn worker, found {children}")
    return server, int(children[0]), log_path


def _backends() -> dict[int, float]:
    """CPU seconds of every other connection to the benchmark database: the server's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        pids = [pid for (pid,) in cursor.fetchall()]
    found = {}
    for pid in pids:
        try:
            found[pid] = _cpu_seconds(pid)
        except OSError:  # a server on another machine (DATABASE_URL): not measured
            pass
    return found


def _gunicorn_round(worker: int, plans, args, *, tag: str) -> dict:
    """The round's deliveries over HTTP/1.1 keep-alive from ``args.threads`` client connections."""
    import http.client

    customers, events, unique, deliveries = _population(plans, args, tag)
    shares = [deliveries[n :: args.threads] for n in range(args.threads)]
    # Requests built and signed before the clock starts (the processor's work, not ours).
    requests = [
        [
            (
                f"/webhooks/{processor}/",
                data,
                {
                    "Content-Type": "application/json",
                    "X-Forwarded-Proto": "https",
                    f"{processor.title()}-Signature": signature_header(processor, data, SECRET),
                },
            )
            for processor, _, data in share
        ]
        for share in shares
    ]
    answers: list[dict] = [{} for _ in shares]
    errors: list[str] = []
    ready, go = threading.Barrier(len(shares) + 1), threading.Event()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
        try:
            conn.connect()
            ready.wait()
            go.wait()
            for path, body, headers in requests[n]:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                answers[n][response.status] = answers[n].get(response.status, 0) + 1
        except Exception as exc:  # noqa: BLE001 - reported after the round, which then fails
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(len(shares))]
    for thread in threads:
        thread.start()
    ready.wait()
    log(
        f"round {tag} (gunicorn, 1 worker, {args.threads} threads): posting {len(deliveries):,} deliveries ..."
    )
    backends_started, worker_started = _backends(), _cpu_seconds(worker)
    client_started = time.process_time()
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_started
    worker_cpu = _cpu_seconds(worker) - worker_started
    backends_cpu = sum(cpu - backends_started.get(pid, 0.0) for pid, cpu in _backends().items())
    if errors:
        raise SystemExit(f"round {tag}: a delivery failed: {errors[0]}")
    return {
        "one_statement": True,
        "threads": args.threads,
        "server": "gunicorn",
        "rate": len(deliveries) / elapsed,
        "statements": None,
        "answers": _statuses(answers),
        "load": os.getloadavg()[0],
        "cpu_ms": worker_cpu / len(deliveries) * 1000,
        "backend_cpu_ms": backends_cpu / len(deliveries) * 1000,
        "client_cpu_ms": client_cpu / len(deliveries) * 1000,
        **_kept(customers, events, unique),
    }


def _parallel_redeliveries(app, plans, args) -> dict:
    """Each event of a small stream delivered by every thread at the same instant, then the same stream
    delivered once each on a population of its own: the two must leave the same rows (applied once)."""
    import json

    small = argparse.Namespace(**{**vars(args), "customers": 20, "deliveries": 60})
    kept = []
    for tag, copies in (("once", 1), ("par", args.threads)):
        customers, events, unique, _ = _population(plans, small, tag)
        answers: dict[int, int] = {}
        firsts = []  # per event: the deliveries that answered duplicate false (the one that applied it)
        lock = threading.Lock()
        log(f"parallel redeliveries: {unique} events, each delivered by {copies} thread(s) at once ...")
        for processor, _, data in events:
            barrier, got = threading.Barrier(copies), []

            def deliver(processor=processor, data=data, barrier=barrier, got=got, answers=answers, lock=lock):
                environ = _environ(processor, data)
                try:
                    barrier.wait()
                    code, body = _post(app, environ)
                    with lock:
                        got.append(json.loads(body).get("duplicate"))
                        answers[code] = answers.get(code, 0) + 1
                finally:
                    connection.close()

            threads = [threading.Thread(target=deliver) for _ in range(copies)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            firsts.append(got.count(False))
        kept.append(
            {
                "copies": copies,
                "answers": answers,
                "applied_once": firsts.count(1),
                **_kept(customers, events, unique),
            }
        )
    once, par = kept
    same = [k for k in ("by_status", "grants", "audit", "subscriptions") if once[k] != par[k]]
    return {
        **par,
        "ok": not same
        and par["applied_once"] == par["unique"] == par["stored"]
        and par["grants"] == par["packs"]
        and set(par["answers"]) == {200},
        "differs": same,
    }


def _kept(customers, events, unique) -> dict:
    """What the round left: inbox rows and their statuses, grants, audit rows, subscriptions' state."""
    from billing.models import AuditLog, CreditGrant, Subscription, WebhookEvent

    ids = [event_id for _, event_id, _ in events]
    mine = WebhookEvent.objects.filter(event_id__in=ids)
    subs = Subscription.objects.filter(customer__in=customers).order_by("external_subscription_id")
    return {
        "stored": mine.count(),
        "unique": unique,
        "by_status": dict(mine.values_list("status").annotate(n=Count("id")).order_by("status")),
        "grants": CreditGrant.objects.filter(customer__in=customers).count(),
        "packs": sum(1 for _, _, d in events if b"checkout.session.completed" in d or b'"metric"' in d),
        "audit": AuditLog.objects.filter(customer_id__in=[c.pk for c in customers]).count(),
        # What the newest event of each subscription said: the same whatever order they arrived in.
        "subscriptions": [
            (
                s.external_subscription_id.rsplit("_", 1)[1],
                s.plan.code,
                s.status,
                s.current_period_end - s.current_period_start,
            )
            for s in subs.select_related("plan")
        ],
    }


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process on this machine has used: the PostgreSQL backend's here."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stream(rng, customers, subs, start, end, count):
    """count deliveries' worth of unique events: 60 % subscription updates, 20 % packs, 20 % ignored."""
    unique = int(count * 0.9)
    events = []
    for n in range(unique):
        customer = rng.choice(customers)
        processor, sub_id = subs[customer.pk]
        at = start + timedelta(seconds=n + 1)
        kind = rng.random()
        price = rng.choice(["starter", "growth", "pro"])
        if processor == "stripe":
            if kind < 0.6:
                payload = wp.stripe_event(
                    "customer.subscription.updated",
                    wp.stripe_subscription(
                        sub_id=sub_id,
                        customer_id=customer.pk,
                        price_id=f"price_demo_{price}",
                        status="active",
                        start=start,
                        end=end,
                    ),
                    created=at,
                )
            elif kind < 0.8:
                payload = wp.stripe_event(
                    "checkout.session.completed",
                    wp.stripe_pack_checkout(customer_id=customer.pk, metric="minutes", quantity=100),
                    created=at,
                )
            else:
                payload = wp.stripe_event(
                    "charge.succeeded", {"id": f"ch_{n}", "object": "charge"}, created=at
                )
            event_id = payload["id"]
        else:
            if kind < 0.6:
                payload = wp.paddle_event(
                    "subscription.updated",
                    wp.paddle_subscription(
                        sub_id=sub_id,
                        customer_id=customer.pk,
                        price_id=f"pri_demo_{price}",
                        status="active",
                        start=start,
                        end=end,
                    ),
                    occurred=at,
                )
            elif kind < 0.8:
                payload = wp.paddle_event(
                    "transaction.completed",
                    wp.paddle_transaction(
                        sub_id=None,
                        origin="web",
                        custom_data={
                            "customer_id": str(customer.pk),
                            "metric": "ai_interaction",
                            "quantity": "500",
                        },
                    ),
                    occurred=at,
                )
            else:
                payload = wp.paddle_event("address.updated", {"id": f"add_{n}"}, occurred=at)
            event_id = payload["event_id"]
        events.append((processor, event_id, wp.body(payload)))
    return events, unique


def _commit_floor() -> float:
    """Microseconds for one committed single-row INSERT (median of 300): the WAL flush of a commit."""
    times = []
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_commit (n integer)")
        for n in range(300):
            started = time.perf_counter()
            cursor.execute("INSERT INTO bench_commit VALUES (%s)", [n])
            times.append(time.perf_counter() - started)
        cursor.execute("DROP TABLE bench_commit")
    return statistics.median(times) * 1e6


def _connect_cost() -> float:
    """Microseconds to open a connection and run its first statement (median of 50)."""
    times = []
    for _ in range(50):
        connection.close()
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def _stack_floor(client) -> float:
    """Microseconds for a delivery refused for its signature (median of 300): the request stack alone."""
    import logging

    data = wp.body(
        wp.stripe_event("charge.succeeded", {"id": "ch_x", "object": "charge"}, created=timezone.now())
    )
    logging.disable(logging.WARNING)  # each refusal logs a line
    times = []
    for _ in range(300):
        started = time.perf_counter()
        client.post(
            "/webhooks/stripe/", data=data, content_type="application/json", HTTP_STRIPE_SIGNATURE="t=1,v1=00"
        )
        times.append(time.perf_counter() - started)
    logging.disable(logging.NOTSET)
    return statistics.median(times) * 1e6


if __name__ == "__main__":
    main()
