#!/usr/bin/env python3
"""`make mutants`: plant each bug of scripts/mutants_catalogue.py, one at a time, and see whether the
tests notice. Not part of `make test`.

For each mutant: apply it to a temporary copy of the working tree (the checkout itself is never
touched, so an interrupted run leaves nothing behind), run makemigrations when it changed a trigger
declaration, run its fast subset of tests, and if they all pass run the whole suite. A mutant of a
database-facing file (SQL, migrations, triggers) must change what the migrations put in the test
database (checked against the unmutated baseline's fingerprint), else it is reported as not applied.

Progress goes to stderr; the score, the survivors and the errors to stdout. Exit 0 when the run
completed (whatever the score), 1 when the baseline failed or a mutant could not be applied.

    scripts/mutants.py [--only ID ...] [--tests NODE ...] [--no-full] [--list]
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from mutants_catalogue import MUTANTS, Mutant  # noqa: E402

SUBSET_TIMEOUT = 600
FULL_TIMEOUT = 1500
IGNORED = (
    # Fails on every mutant by design (its snippet is gone): not a kill.
    "tests/test_mutants_catalogue.py",
    # Fails on every mutant of a frozen migration SQL file by design (its hash changed): not a kill.
    "tests/test_frozen_sql.py",
    # The embedded server's life cycle: no mutant touches billing/db, and these tests share a
    # machine-wide lock with every other checkout's server, so their timing depends on other processes.
    "tests/test_embedded_postgres.py",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def database_facing(path: str) -> bool:
    return path.endswith(".sql") or "/migrations/" in path or path.endswith("triggers.py")


# --- the database the runs use -------------------------------------------------------------------


def database_url() -> str:
    """DATABASE_URL for every run: the caller's server, or the checkout's embedded one held open here.

    Holding the embedded server in this process (and handing the runs a plain URL) keeps each run
    from starting and stopping it; the runs' database is "mutants", so `make test` can run alongside.
    """
    url = os.environ.get("DATABASE_URL")
    if url:
        return urlunsplit(urlsplit(url)._replace(path="/mutants"))
    os.environ.setdefault(
        "DJANGO_SETTINGS_MODULE", "tests.settings"
    )  # the suite's own settings, as pytest uses
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    from billing.db.embedded.base import embedded_server

    info = embedded_server(settings.DATABASES["default"]["PGDATA"]).get_postmaster_info()
    return f"postgres://postgres@/mutants?host={info.socket_dir}&port={info.port}"


# --- the working copy ----------------------------------------------------------------------------


def copy_tree(target: Path) -> None:
    """Every tracked or new (not ignored) file of the working tree, as it is now."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def migration_files(tree: Path) -> set[Path]:
    return {p for app in ("usage", "billing") for p in (tree / app / "migrations").glob("*.py")}


# --- running pytest ------------------------------------------------------------------------------


class Run:
    def __init__(self, status: str, output: str, seconds: float):
        self.status, self.output, self.seconds = status, output, seconds

    @property
    def first_failure(self) -> str:
        match = re.search(r"^(?:FAILED|ERROR) ([^\s\[]+(?:\[.*?\])?)", self.output, re.M)
        return match[1] if match else ""


def run(command: list[str], tree: Path, env: dict, timeout: int) -> Run:
    """Run in its own process group, killed whole on timeout or when we are interrupted."""
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return Run("timeout", output, time.monotonic() - started)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    status = {0: "passed", 1: "failed"}.get(process.returncode, f"exit {process.returncode}")
    return Run(status, output, time.monotonic() - started)


def pytest(tests: list[str], tree: Path, env: dict, timeout: int) -> Run:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "mutants_plugin",
        *(f"--ignore={ignored}" for ignored in IGNORED),
        *tests,
    ]
    return run(command, tree, env, timeout)


# --- one mutant ----------------------------------------------------------------------------------


class Outcome:
    def __init__(self, mutant: Mutant, status: str, detail: str = "", seconds: float = 0.0):
        self.mutant, self.status, self.detail, self.seconds = mutant, status, detail, seconds


def apply(mutant: Mutant, tree: Path) -> str:
    path = tree / mutant.path
    text = path.read_text()
    if text.count(mutant.original) != 1:
        raise ValueError(
            f"{mutant.id}: the original snippet occurs {text.count(mutant.original)} times in {mutant.path}"
        )
    path.write_text(text.replace(mutant.original, mutant.replacement))
    return text


def try_mutant(
    mutant: Mutant, tree: Path, env: dict, baseline: dict, tests: list[str] | None, full: bool
) -> Outcome:
    started = time.monotonic()
    before = migration_files(tree)
    original = apply(mutant, tree)
    fingerprint = tree.parent / "fingerprint.json"
    try:
        if mutant.path.endswith("triggers.py"):
            made = run(
                [
                    sys.executable,
                    "manage.py",
                    "makemigrations",
                    "usage",
                    "billing",
                    "--name",
                    "mutant",
                    "--no-input",
                ],
                tree,
                env,
                300,
            )
            if made.status != "passed" or not migration_files(tree) - before:
                return Outcome(
                    mutant, "not applied", "makemigrations made no migration:\n" + made.output[-2000:]
                )
        fingerprint.unlink(missing_ok=True)
        env = {**env, "MUTANTS_FINGERPRINT": str(fingerprint)}
        subset = pytest(tests or list(mutant.tests), tree, env, SUBSET_TIMEOUT)
        if (
            database_facing(mutant.path)
            and fingerprint.exists()
            and json.loads(fingerprint.read_text()) == baseline
        ):
            return Outcome(mutant, "not applied", "the test database is the same as without the mutant")
        if subset.status in ("failed", "timeout"):
            return Outcome(
                mutant,
                "killed",
                f"{subset.first_failure or subset.status} (subset)",
                time.monotonic() - started,
            )
        if subset.status != "passed":
            return Outcome(mutant, "error", f"subset: {subset.status}\n{subset.output[-3000:]}")
        if not full:
            return Outcome(mutant, "survived", "subset only", time.monotonic() - started)
        suite = pytest([], tree, env, FULL_TIMEOUT)
        if suite.status in ("failed", "timeout"):
            return Outcome(
                mutant,
                "killed",
                f"{suite.first_failure or suite.status} (whole suite)",
                time.monotonic() - started,
            )
        if suite.status != "passed":
            return Outcome(mutant, "error", f"whole suite: {suite.status}\n{suite.output[-3000:]}")
        return Outcome(mutant, "survived", "", time.monotonic() - started)
    finally:
        (tree / mutant.path).write_text(original)
        for made in migration_files(tree) - before:
            made.unlink()


def confirm_kill(outcome: Outcome, tree: Path, env: dict) -> Outcome:
    """The killing test must pass again on the restored tree, or it was not the mutant that failed it."""
    killer = outcome.detail.split(" (")[0]
    if "::" not in killer:
        return outcome  # a timeout: the subset hung, which it does not on the baseline
    again = pytest([killer], tree, env, SUBSET_TIMEOUT)
    if again.status != "passed":
        return Outcome(
            outcome.mutant, "flaky", f"{killer} also fails without the mutant:\n{again.output[-3000:]}"
        )
    return outcome


# --- the campaign --------------------------------------------------------------------------------


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    parser.add_argument(
        "--tests", nargs="+", metavar="NODE", help="run these tests instead of each mutant's subset"
    )
    parser.add_argument("--no-full", action="store_true", help="do not run the whole suite against survivors")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    args = parser.parse_args()

    mutants = [m for m in MUTANTS if not args.only or m.id in args.only]
    if args.only and len(mutants) != len(set(args.only)):
        parser.error(f"unknown mutant ids: {sorted(set(args.only) - {m.id for m in MUTANTS})}")
    if args.list:
        for m in mutants:
            print(f"{m.id:36} {m.path:45} {m.description}")
        return 0

    started = time.monotonic()
    # SIGTERM and SIGHUP end the run like Ctrl-C: the finally blocks kill the test process and drop the copy.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="billing-ops-mutants-"))
    try:
        tree = workdir / "tree"
        copy_tree(tree)
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "PYTHONPATH": str(tree / "scripts"),
            "PYTHONDONTWRITEBYTECODE": "1",
            # The copy has no .git: tests/test_upgrades.py reads the earlier commit from the checkout's.
            "GIT_DIR": str(ROOT / ".git"),
        }  # no .pyc: a mutant and its restore can share an mtime second

        log(f"baseline: the whole suite on the unmutated tree ({len(mutants)} mutants to follow)")
        fingerprint = workdir / "fingerprint.json"
        baseline_run = pytest([], tree, {**env, "MUTANTS_FINGERPRINT": str(fingerprint)}, FULL_TIMEOUT)
        if baseline_run.status != "passed":
            print(
                f"The unmutated suite does not pass ({baseline_run.status}):\n{baseline_run.output[-5000:]}"
            )
            return 1
        baseline = json.loads(fingerprint.read_text())
        log(f"baseline passed in {baseline_run.seconds:.0f} s")

        outcomes = []
        for n, mutant in enumerate(mutants, 1):
            outcome = try_mutant(mutant, tree, env, baseline, args.tests, not args.no_full)
            if outcome.status == "killed":
                outcome = confirm_kill(outcome, tree, env)
            outcomes.append(outcome)
            log(
                f"[{n}/{len(mutants)}] {outcome.status:11} {mutant.id} ({outcome.seconds:.0f} s) "
                f"{outcome.detail.splitlines()[0] if outcome.detail else ''}"
            )
    except KeyboardInterrupt:
        log("interrupted: the checkout was never changed; the temporary copy is removed")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    killed = [o for o in outcomes if o.status == "killed"]
    survived = [o for o in outcomes if o.status == "survived"]
    broken = [o for o in outcomes if o.status not in ("killed", "survived")]
    scored = len(killed) + len(survived)
    minutes = (time.monotonic() - started) / 60
    print(
        f"Mutation score: {len(killed)}/{scored} killed ({100 * len(killed) / max(scored, 1):.1f} %) "
        f"in {minutes:.1f} min"
    )
    for o in killed:
        print(f"  killed    {o.mutant.id:36} by {o.detail}")
    for o in survived:
        print(f"  SURVIVED  {o.mutant.id:36} {o.mutant.path}: {o.mutant.description}")
    for o in broken:
        print(f"  {o.status.upper():9} {o.mutant.id:36} {o.detail}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
