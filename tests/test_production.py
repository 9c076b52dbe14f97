"""Production settings and serving (SPEC §10, §13), tested on real processes: manage.py, the demo's
runserver and production's gunicorn, each started the way the Makefile starts it, answering real HTTP.
"""

import http.client
import json
import re
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, manage_env

# The production environment of the README's Deployment section (its variables, placeholder values).
PRODUCTION_ENV = {
    "SECRET_KEY": "k7Qe2rV9xw4ZpL0tYb6NfJ3sHd8MuC1aGi5oTn-XyRzWq_EvBc",
    "ALLOWED_HOSTS": "127.0.0.1",
    "STRIPE_WEBHOOK_SECRET": "whsec_production",
    "PADDLE_WEBHOOK_SECRET": "pdl_ntfset_production",
}
# What the process must not inherit from the test run (tests.settings, its key, its DEBUG, the
# browser tests' async switch).
NOT_INHERITED = (
    "DJANGO_SETTINGS_MODULE",
    "SECRET_KEY",
    "DEBUG",
    "PORT",
    "WEB_CONCURRENCY",
    "FORWARDED_ALLOW_IPS",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)


def production_env(**overrides) -> dict:
    """The production settings (billing.settings, DEBUG off) on the test database."""
    env = {k: v for k, v in manage_env().items() if k not in NOT_INHERITED}
    env.update(PRODUCTION_ENV, DJANGO_SETTINGS_MODULE="billing.settings")
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> dict:
    """A production environment whose STATIC_ROOT holds what collectstatic wrote, as `make serve` does."""
    env = production_env(STATIC_ROOT=str(tmp_path_factory.mktemp("static")))
    result = manage("collectstatic", "--noinput", env=env)
    assert result.returncode == 0, result.stderr
    return env


def manage(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A web server process on 127.0.0.1, stopped (SIGTERM) on exit; its stderr kept for the tests."""

    def __init__(self, argv, env):
        self.port = free_port()
        argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        self.proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stderr = ""

    def __enter__(self):
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the server exited with {self.proc.returncode}: {self.proc.communicate()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, "the server did not start listening"
                time.sleep(0.2)

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                _, self.stderr = self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, self.stderr = self.proc.communicate()
        return self.stderr

    def get(self, path, headers=None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path, headers={"Host": "127.0.0.1", **(headers or {})})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()


def gunicorn(env, settings_module="billing.settings") -> Server:
    """Production's server as `make serve` starts it: gunicorn with the repository's gunicorn.conf.py."""
    env = dict(env, DJANGO_SETTINGS_MODULE=settings_module)
    return Server([sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:{port}"], env)


# A request that reached gunicorn through a TLS proxy on this machine (trusted by FORWARDED_ALLOW_IPS).
VIA_TLS_PROXY = {"X-Forwarded-Proto": "https"}


def json_lines(stderr: str) -> list[dict]:
    """Every stderr line is one JSON record (billing/logs.py); a line that is not fails the test."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


# --- refusing to start --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret_key",
    [None, "", "billing-ops-local-demo-key-not-for-production"],
    ids=["unset", "empty", "published-demo-key"],
)
def test_debug_off_without_a_secret_key_of_its_own_refuses_to_start(secret_key):
    result = manage("check", env=production_env(SECRET_KEY=secret_key))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "billing-ops: SECRET_KEY is not set (or is the published demo key) and DEBUG is off: set a random key "
        "of your own (README, Deployment), or DEBUG=on for a local demo."
    ]
    assert result.stdout == ""


def test_gunicorn_refuses_once_and_exits_instead_of_restarting_workers_for_ever():
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{free_port()}"],
        env=production_env(SECRET_KEY=None),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "billing-ops: SECRET_KEY is not set (or is the published demo key) and DEBUG is off: set a random key "
        "of your own (README, Deployment), or DEBUG=on for a local demo."
    ]


@pytest.mark.parametrize(
    "url, message",
    [
        (
            "notaurl",
            "DATABASE_URL must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/NAME (got no scheme; "
            "SQLite and others are not supported).",
        ),
        (
            "sqlite:///billing.db",
            "DATABASE_URL must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/NAME "
            "(got 'sqlite://'; SQLite and others are not supported).",
        ),
        (
            "mysql://ops:hunter2@db/billing",
            "DATABASE_URL must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/NAME "
            "(got 'mysql://'; SQLite and others are not supported).",
        ),
        (
            "postgres://ops:hunter2@db:fivefourthreetwo/billing",
            "DATABASE_URL is not a valid URL: Port could not be cast to integer value as 'fivefourthreetwo'.",
        ),
    ],
    ids=["not-a-url", "sqlite", "mysql", "port-not-a-number"],
)
def test_a_bad_database_url_exits_2_with_one_line_and_never_prints_the_password(url, message):
    for command in (["check"], ["migrate", "--check"], ["usage_discrepancies"]):
        result = manage(*command, env=production_env(DATABASE_URL=url))
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.splitlines() == [f"billing-ops: {message}"]
        assert "hunter2" not in result.stderr


# --- the documented production environment ------------------------------------------------------


@pytest.mark.parametrize("value", ["sixty", "-1", "1e3", "10000000000"])
def test_a_bad_database_conn_max_age_exits_2_with_one_line(value):
    result = manage("check", env=production_env(DATABASE_CONN_MAX_AGE=value))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"billing-ops: DATABASE_CONN_MAX_AGE must be a whole number of seconds, 0 or more (got {value!r})."
    ]


def test_check_deploy_is_clean_with_the_documented_production_environment():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert result.stderr == ""


def test_check_deploy_and_so_make_serve_refuse_the_demos_debug_on():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(DEBUG="on"))
    assert result.returncode == 1
    assert "security.W018" in result.stderr  # DEBUG on in deployment


def test_the_readme_documents_every_variable_of_the_production_environment():
    deployment = (ROOT / "README.md").read_text().split("## Deployment", 1)[1].split("\n## ", 1)[0]
    for variable in [
        *PRODUCTION_ENV,
        "DATABASE_URL",
        "FORWARDED_ALLOW_IPS",
        "WEB_CONCURRENCY",
        "HSTS_SECONDS",
        "STATIC_ROOT",
        "DATABASE_CONN_MAX_AGE",
    ]:
        assert f"`{variable}`" in deployment or f"{variable}=" in deployment, variable
    for step in ("manage.py migrate", "manage.py collectstatic", "make serve", "/healthz", "crontab"):
        assert step in deployment, step


# --- static files -------------------------------------------------------------------------------


def demo_env() -> dict:
    """The environment `make demo` gives its commands: the Makefile's `demo: export NAME = value` lines."""
    makefile = (ROOT / "Makefile").read_text()
    assert "manage.py runserver --noreload" in makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    exported = dict(re.findall(r"^demo: export (\w+) \??= (.*)$", makefile, re.M))
    env = {k: v for k, v in manage_env().items() if k not in NOT_INHERITED}
    return dict(env, DJANGO_SETTINGS_MODULE="billing.settings", **exported)


def demo_server(settings_module="billing.settings") -> Server:
    env = dict(demo_env(), DJANGO_SETTINGS_MODULE=settings_module)
    return Server(
        [sys.executable, str(ROOT / "manage.py"), "runserver", "--noreload", "127.0.0.1:{port}"], env
    )


@pytest.mark.django_db
def test_the_demo_server_serves_the_admin_styled():
    """`make demo`'s runserver, in the Makefile's environment: the admin's CSS, without collectstatic."""
    with demo_server() as demo:
        status, _, page = demo.get("/admin/login/")
        assert status == 200
        assert b'href="/static/admin/css/base.css"' in page
        status, headers, css = demo.get("/static/admin/css/base.css")
        assert status == 200
        assert headers["content-type"].startswith("text/css")
        assert b"DJANGO Admin styles" in css
        status, _, _ = demo.get("/static/admin/js/nav_sidebar.js")
        assert status == 200
    assert "Traceback" not in demo.stderr


@pytest.mark.django_db
def test_production_serves_collected_static_files_hashed_compressed_and_cached(collected):
    with gunicorn(collected) as server:
        status, _, page = server.get("/admin/login/", VIA_TLS_PROXY)
        assert status == 200
        css_url = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page).group(1).decode()
        status, headers, body = server.get(css_url, {**VIA_TLS_PROXY, "Accept-Encoding": "gzip"})
        assert status == 200
        assert headers["content-type"].startswith("text/css")
        assert headers["content-encoding"] == "gzip"
        assert "immutable" in headers["cache-control"] and "max-age=315360000" in headers["cache-control"]
        assert body[:2] == b"\x1f\x8b"


# --- HTTPS only ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_production_redirects_plain_http_and_sends_hsts_and_secure_cookies_over_https(collected):
    with gunicorn(collected) as server:
        status, headers, _ = server.get("/admin/login/")
        assert status == 301
        assert headers["location"] == "https://127.0.0.1/admin/login/"

        status, headers, _ = server.get("/admin/login/", VIA_TLS_PROXY)
        assert status == 200
        assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
        assert "; Secure" in headers["set-cookie"] and headers["set-cookie"].startswith("csrftoken=")


@pytest.mark.django_db
def test_x_forwarded_proto_is_trusted_only_from_the_proxies_in_forwarded_allow_ips(collected):
    """A client that sends X-Forwarded-Proto itself, from an address that is not the proxy's, still
    gets the redirect: the header alone never makes a plain-HTTP request look like HTTPS."""
    with gunicorn(dict(collected, FORWARDED_ALLOW_IPS="192.0.2.10")) as server:
        status, headers, _ = server.get("/admin/login/", VIA_TLS_PROXY)
        assert status == 301
        assert headers["location"] == "https://127.0.0.1/admin/login/"


# --- logs ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unexpected_error_in_a_view_is_logged_with_its_traceback_as_one_json_line(collected):
    with gunicorn(collected, settings_module="tests.crashing_view_settings") as server:
        status, _, body = server.get("/crash", VIA_TLS_PROXY)
        assert status == 500
        assert b"Traceback" not in body and b"crash test view" not in body  # nothing leaks to the client
    records = json_lines(server.stderr)
    assert_crash_logged(records)
    assert {r["logger"] for r in records} >= {"gunicorn.error", "gunicorn.access"}  # gunicorn's too


@pytest.mark.django_db
def test_the_demo_server_logs_an_unexpected_error_the_same_way():
    with demo_server("tests.crashing_view_settings") as server:
        status, _, _ = server.get("/crash")
        assert status == 500
    assert_crash_logged(json_lines(server.stderr))


@pytest.mark.django_db
def test_the_demo_servers_access_lines_name_the_request_in_words():
    """runserver's access lines (django.server) carried the socket's repr as ``request``
    ("<socket.socket fd=4, ...>") and the time a second time as ``server_time``."""
    with demo_server("tests.crashing_view_settings") as server:
        assert server.get("/admin/login/?next=/admin/")[0] == 200
        assert server.get("/crash")[0] == 500
    records = json_lines(server.stderr)
    access = [r for r in records if r["logger"] == "django.server"]
    assert [(r["request"], r["status_code"]) for r in access] == [
        ("GET /admin/login/", 200),
        ("GET /crash", 500),
    ]
    assert all("server_time" not in r for r in access)
    assert '"GET /admin/login/?next=/admin/ HTTP/1.1" 200' in access[0]["message"]  # the query stays there
    [error] = [r for r in records if r["logger"] == "django.request"]
    assert error["request"] == "GET /crash"  # was "<WSGIRequest: GET '/crash'>"
    assert "socket" not in server.stderr


def assert_crash_logged(records):
    [error] = [r for r in records if r["logger"] == "django.request"]
    assert error["level"] == "ERROR"
    assert error["message"] == "Internal Server Error: /crash"
    assert error["status_code"] == 500
    assert error["exc_info"].startswith("Traceback (most recent call last):")
    assert error["exc_info"].endswith("RuntimeError: an unexpected error in the crash test view")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", error["time"])


def test_an_unexpected_error_in_a_command_is_logged_the_same_way():
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        "raise RuntimeError('an unexpected error in a command')",
        env=production_env(),
    )
    assert result.returncode == 1
    [error] = json_lines(result.stderr)
    assert (error["level"], error["logger"], error["message"]) == (
        "ERROR",
        "billing.commands",
        "manage.py shell failed",
    )
    assert error["exc_info"].startswith("Traceback (most recent call last):")
    assert error["exc_info"].endswith("RuntimeError: an unexpected error in a command")


def test_python_warnings_are_log_records_too():
    """A missing STATIC_ROOT (collectstatic not run) warns through WhiteNoise: a JSON line, not a bare one."""
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        "import warnings; warnings.warn('a warning from a library')",
        env=production_env(),
    )
    assert result.returncode == 0
    [warning] = json_lines(result.stderr)
    assert (warning["level"], warning["logger"]) == ("WARNING", "py.warnings")
    assert "UserWarning: a warning from a library" in warning["message"]


# --- health --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_is_503_with_one_line_in_the_log_when_the_database_is_unreachable(collected):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        env = dict(collected, DATABASE_URL=f"postgres://billing@127.0.0.1:{closed.getsockname()[1]}/billing")
        with gunicorn(env) as server:
            status, headers, body = server.get("/healthz")  # plain HTTP: balancers probe the app itself
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "unhealthy", "database": "unreachable", "triggers": None}
    [warning] = [r for r in json_lines(server.stderr) if r["logger"] == "billing.health"]
    assert warning["level"] == "WARNING" and warning["message"].startswith("health: database unreachable: ")
    assert "exc_info" not in warning


@pytest.mark.django_db
def test_health_is_200_on_plain_http_from_the_production_server(collected):
    with gunicorn(collected) as server:
        status, _, body = server.get("/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


@pytest.mark.django_db
def test_production_serves_requests_in_parallel_threads_of_one_worker(collected):
    """gunicorn.conf.py's threads: one worker process serves several requests at once (SPEC §11's
    webhook rate on one process needs it); gunicorn's default served one at a time."""
    with gunicorn(collected) as server:
        status, _, _ = server.get("/admin/login/", VIA_TLS_PROXY)
        assert status == 200
    messages = [r["message"] for r in json_lines(server.stderr) if r["logger"] == "gunicorn.error"]
    assert "Using worker: gthread" in messages, messages
