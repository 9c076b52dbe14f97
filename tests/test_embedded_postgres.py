"""The embedded default (SPEC §2): a private server per data folder, reused, stopped cleanly."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

SHOW = (
    "from django.db import connection; c = connection.cursor(); "
    "c.execute('CREATE TABLE IF NOT EXISTS marker (n int)'); c.execute('INSERT INTO marker VALUES (1)'); "
    "c.execute('SELECT count(*) FROM marker'); print(c.fetchone()[0], connection.settings_dict['HOST'])"
)


def embedded_env(pgdata: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "EMBEDDED_DBNAME")}
    env["EMBEDDED_PGDATA"] = str(pgdata)
    return env


def manage(pgdata, *args, **kwargs):
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=embedded_env(pgdata),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def postmaster_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def pgdata(tmp_path):
    # A short path: the Unix socket lives inside the data folder.
    folder = tmp_path / "pg"
    yield folder
    if postmaster_running(folder):  # never leave a server behind, whatever the test did
        pid = int((folder / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 15)


def test_started_on_first_use_reused_next_time_and_stopped_when_the_last_process_exits(pgdata):
    first = manage(pgdata, "shell", "--no-imports", "-c", SHOW)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[0] == "1"
    assert not postmaster_running(pgdata), "the server outlived the last process using it"

    second = manage(pgdata, "shell", "--no-imports", "-c", SHOW)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[0] == "2"  # same data folder, same data
    assert not postmaster_running(pgdata)


def test_two_checkouts_run_side_by_side_without_clashing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    # Checkout A keeps its server busy while checkout B starts its own.
    holder = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "shell",
            "--no-imports",
            "-c",
            SHOW + "; import time; time.sleep(8)",
        ],
        env=embedded_env(a),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not postmaster_running(a):
            assert time.monotonic() < deadline and holder.poll() is None, holder.communicate()
            time.sleep(0.2)
        result_b = manage(b, "shell", "--no-imports", "-c", SHOW)
        assert result_b.returncode == 0, result_b.stderr
        out_a, err_a = holder.communicate(timeout=60)
        assert holder.returncode == 0, err_a
    finally:
        if holder.poll() is None:
            holder.kill()
    count_a, socket_a = out_a.split()
    count_b, socket_b = result_b.stdout.split()
    assert (count_a, count_b) == ("1", "1")  # separate databases
    assert socket_a != socket_b
    assert socket_a.startswith(str(a)) and socket_b.startswith(str(b))
    assert not postmaster_running(a) and not postmaster_running(b)


def _hold_server(pgdata, seconds=60):
    """A process that uses the server and then idles, the way runserver does."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "shell",
            "--no-imports",
            "-c",
            SHOW + f"; import time; time.sleep({seconds})",
        ],
        env=embedded_env(pgdata),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().split()[0] == "1", proc.stderr.read() if proc.poll() is not None else ""
    return proc


def test_kill_with_sigterm_stops_the_server_cleanly(pgdata):
    holder = _hold_server(pgdata)
    assert postmaster_running(pgdata)
    holder.terminate()
    holder.wait(timeout=30)
    assert not postmaster_running(pgdata)


def test_a_process_killed_with_sigkill_does_not_keep_the_server_forever(pgdata):
    holder = _hold_server(pgdata)
    holder.kill()  # no cleanup at all: its handle stays in the server's list
    holder.wait(timeout=30)
    assert postmaster_running(pgdata)  # left behind, as after any crash
    result = manage(pgdata, "shell", "--no-imports", "-c", SHOW)  # the next start reuses it ...
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "2"
    assert not postmaster_running(pgdata)  # ... and, the dead holder forgotten, stops it


# Each line on stdin: a new connection (as runserver opens per request), one more marker row, its count.
QUERY_PER_LINE = (
    "import sys\n"
    "from django.db import connection\n"
    "for _ in sys.stdin:\n"
    "    connection.close()\n"
    "    try:\n"
    "        c = connection.cursor()\n"
    "        c.execute('CREATE TABLE IF NOT EXISTS marker (n int)')\n"
    "        c.execute('INSERT INTO marker VALUES (1)')\n"
    "        c.execute('SELECT count(*) FROM marker')\n"
    "        print(c.fetchone()[0], flush=True)\n"
    "    except Exception as exc:\n"
    "        print(type(exc).__name__, str(exc).splitlines()[0], flush=True)\n"
)


def _serve_queries(pgdata):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "shell", "--no-imports", "-c", QUERY_PER_LINE],
        env=embedded_env(pgdata),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ask(proc) -> str:
    proc.stdin.write("\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def _postmaster_pid(pgdata) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def _kill_postmaster(pgdata) -> int:
    """kill -9 the server (the OOM killer, an operator), and wait until it is gone."""
    pid = _postmaster_pid(pgdata)
    os.kill(pid, 9)
    deadline = time.monotonic() + 30
    while postmaster_running(pgdata):
        assert time.monotonic() < deadline, "the killed postmaster is still there"
        time.sleep(0.1)
    return pid


def _finish(proc):
    out, err = proc.communicate(timeout=60)  # closes stdin: the process ends
    assert proc.returncode == 0, err
    return out


def test_a_running_process_starts_a_killed_server_again_and_stops_it_when_it_exits(pgdata):
    holder = _serve_queries(pgdata)
    try:
        assert _ask(holder) == "1"
        killed = _kill_postmaster(pgdata)
        assert _ask(holder) == "2"  # started again on the next connection, committed data intact
        assert postmaster_running(pgdata) and _postmaster_pid(pgdata) != killed
        _finish(holder)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert not postmaster_running(pgdata), "the restarted server outlived the last process using it"


def test_a_server_restarted_by_another_process_is_stopped_by_the_last_one_to_exit(pgdata):
    holder = _serve_queries(pgdata)
    try:
        assert _ask(holder) == "1"
        _kill_postmaster(pgdata)
        restarter = manage(pgdata, "shell", "--no-imports", "-c", SHOW)  # starts it again, then exits
        assert restarter.returncode == 0, restarter.stderr
        assert restarter.stdout.split()[0] == "2"
        assert postmaster_running(pgdata)  # the holder still uses it
        assert _ask(holder) == "3"  # and reaches the new server
        _finish(holder)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert not postmaster_running(pgdata), "the restarted server outlived every process"


def test_two_running_processes_share_one_restarted_server(pgdata):
    first, second = _serve_queries(pgdata), _serve_queries(pgdata)
    try:
        assert _ask(first) == "1" and _ask(second) == "2"
        _kill_postmaster(pgdata)
        for proc in (first, second):  # both reconnect at once: one starts it, the other uses it
            proc.stdin.write("\n")
            proc.stdin.flush()
        answers = [first.stdout.readline().strip(), second.stdout.readline().strip()]
        # Each inserts then counts; whichever counts last sees both rows.
        assert set(answers) <= {"3", "4"} and "4" in answers, answers
        _finish(first)
        assert postmaster_running(pgdata)  # the second still uses it
        assert _ask(second) == "5"
        _finish(second)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
    assert not postmaster_running(pgdata)


def test_the_restart_waits_for_the_killed_servers_last_backend_to_exit(pgdata):
    """A backend busy in a query outlives its killed postmaster and keeps the old shared memory, so
    the new server cannot start until it ends; the reconnecting process retries until then."""
    holder = _serve_queries(pgdata)
    busy = None
    try:
        assert _ask(holder) == "1"
        socket_dir = (pgdata / "postmaster.pid").read_text().splitlines()[4]
        # Busy without waiting on anything, so it does not notice its postmaster's death; it ends once
        # the file "release" appears in the data folder.
        busy = threading.Thread(target=_busy_until_released, args=(socket_dir,))
        busy.start()
        _wait_for(lambda: _backend_is_busy(pgdata), "the busy query to start")
        _kill_postmaster(pgdata)
        holder.stdin.write("\n")
        holder.stdin.flush()
        _wait_for(
            lambda: "pre-existing shared memory block" in (pgdata / "log").read_text(),
            "a start refused while the old backend lives",
        )
        (pgdata / "release").touch()
        assert holder.stdout.readline().strip() == "2"
        _finish(holder)
    finally:
        (pgdata / "release").touch()
        if busy is not None:
            busy.join(timeout=60)
        if holder.poll() is None:
            holder.kill()
    assert not postmaster_running(pgdata)


def _busy_until_released(socket_dir):
    import psycopg

    try:
        with psycopg.connect(host=socket_dir, dbname="billing_ops", user="postgres", autocommit=True) as conn:
            conn.execute(
                "DO $$ BEGIN WHILE (pg_stat_file('release', true)).size IS NULL LOOP END LOOP; END $$"
            )
    except psycopg.OperationalError:
        pass  # its server is gone by the time it answers


def _backend_is_busy(pgdata) -> bool:
    """A child of the postmaster whose process title shows the DO block running."""
    import psutil

    postmaster = psutil.Process(_postmaster_pid(pgdata))
    return any(
        child.cmdline()[-1:] == ["DO"] or " DO" in " ".join(child.cmdline())
        for child in postmaster.children()
    )


def _wait_for(condition, what, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "signum, whom",
    [
        (signal.SIGTERM, "process"),  # kill <pid>
        (signal.SIGTERM, "group"),  # pkill -f runserver: the autoreloader and its child alike
        (signal.SIGINT, "group"),  # Ctrl-C in the terminal
    ],
)
def test_runserver_ended_by_a_signal_stops_the_server(pgdata, signum, whom):
    """runserver (with its autoreloader, as people run it) ended by a signal left the server running:
    the autoreloader kills its serving child, the process that held the server, with SIGKILL."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}"],
        env=embedded_env(pgdata),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10):
                    break
            except urllib.error.HTTPError:
                break  # answered (503 before migrate): the serving child holds the server
            except OSError:
                time.sleep(0.2)
        assert postmaster_running(pgdata)
        if whom == "group":
            os.killpg(server.pid, signum)
        else:
            server.send_signal(signum)
        server.wait(timeout=60)
        deadline = time.monotonic() + 30
        while subprocess.run(["pgrep", "-s", str(server.pid)], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "the serving child outlived the autoreloader"
            time.sleep(0.2)
        # the last process asks for a fast shutdown; its checkpoint takes a moment on a busy machine
        deadline = time.monotonic() + 30
        while postmaster_running(pgdata):
            assert time.monotonic() < deadline, "the server outlived every process that used it"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
