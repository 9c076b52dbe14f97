from billing.management.base import OpsCommand, positive_int, progress_bar
from demo.data import demo_data_load
from demo.logins import demo_admin_ensure
from usage.models import Customer


class Command(OpsCommand):
    help = (
        "Load demo data: customers on every plan, projects, presets, usage over several periods, and the "
        "planted S1 drift cases. Prints the admin login."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--customers", type=positive_int(3), default=200, help="Population size (>= 3: the S1 cases)."
        )
        parser.add_argument("--seed", type=int, default=7, help="Random seed: same seed, same data.")
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing when customers already exist."
        )

    def handle(self, *args, customers, seed, if_empty, **options):
        if if_empty and Customer.objects.exists():
            self.stderr.write("Demo data already loaded; keeping it (make clean-db to start over).")
        else:
            with progress_bar(self.stderr, unit="step", desc="loading demo data") as progress:
                result = demo_data_load(customers=customers, seed=seed, progress=progress)
            self.stderr.write(
                f"Loaded {result.customers} customers, {result.projects} projects, "
                f"{result.preset_uses} preset uses, {result.events} usage events."
            )
        username, password = demo_admin_ensure()
        self.stdout.write(f"Admin login: http://127.0.0.1:8000/admin/  user {username}  password {password}")
        self.stdout.write(
            f"  (also: support / {password} in the Support group, finance / {password} in Finance)"
        )
