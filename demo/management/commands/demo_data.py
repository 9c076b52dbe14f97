from django.conf import settings
from django.core.management.base import CommandError

from billing.management.base import EXIT_USAGE, OpsCommand, positive_int, progress_bar
from demo.install import DemoRefused, demo_install
from demo.logins import ADMIN_PASSWORD

REFUSED_DEBUG_OFF = (
    "DEBUG is off: this looks like a production set-up, and the demo publishes its logins' password. "
    "Run the demo with DEBUG=on (make demo), or pass --allow-debug-off for a database of its own."
)


class Command(OpsCommand):
    help = (
        "Load demo data: customers on every plan, projects, presets, usage over several periods, and the "
        "planted S1 drift cases. Prints the admin login. Refuses a database holding anything but the demo."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--customers", type=positive_int(3), default=200, help="Population size (>= 3: the S1 cases)."
        )
        parser.add_argument("--seed", type=int, default=7, help="Random seed: same seed, same data.")
        parser.add_argument(
            "--if-empty", action="store_true", help="Keep the demo data when it is already loaded."
        )
        parser.add_argument(
            "--allow-debug-off",
            action="store_true",
            help="Load even though DEBUG is off (the demo is for development set-ups).",
        )

    def handle(self, *args, customers, seed, if_empty, allow_debug_off, **options):
        if not settings.DEBUG and not allow_debug_off:
            raise CommandError(REFUSED_DEBUG_OFF, returncode=EXIT_USAGE)
        try:
            with progress_bar(self.stderr, unit="step", desc="loading demo data") as progress:
                installed = demo_install(customers=customers, seed=seed, if_empty=if_empty, progress=progress)
        except DemoRefused as exc:
            raise CommandError(str(exc), returncode=EXIT_USAGE)
        result = installed.result
        if result is None:
            self.stderr.write("Demo data already loaded; keeping it (make clean-db to start over).")
        else:
            self.stderr.write(
                f"Loaded {result.customers} customers, {result.projects} projects, "
                f"{result.preset_uses} preset uses, {result.events} usage events."
            )
        self.stdout.write("Demo logins at http://127.0.0.1:8000/admin/ :")
        for username, created in installed.logins:
            if created:
                self.stdout.write(f"  user {username}  password {ADMIN_PASSWORD}")
            else:
                self.stdout.write(
                    f"  user {username}  (existed already, left as it was: password {ADMIN_PASSWORD} unless changed since)"
                )
        self.stdout.write("  (admin is a superuser; support is in the Support group, finance in Finance)")
