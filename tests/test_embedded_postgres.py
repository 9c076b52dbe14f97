"""The embedded default (SPEC §2): a private server per data folder, reused, stopped cleanly."""

import os
import subprocess
import sys
import time
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
        env=embedded_env(pgdata), cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs,
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
        [sys.executable, str(ROOT / "manage.py"), "shell", "--no-imports", "-c", SHOW + "; import time; time.sleep(8)"],
        env=embedded_env(a), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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
        [sys.executable, str(ROOT / "manage.py"), "shell", "--no-imports", "-c",
         SHOW + f"; import time; time.sleep({seconds})"],
        env=embedded_env(pgdata), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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
