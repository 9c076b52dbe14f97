from django.core.management.base import CommandError
from django.db import connection

from billing.management.base import EXIT_USAGE, OpsCommand
from billing.services.db_roles import db_roles_apply, db_roles_sql


class Command(OpsCommand):
    help = (
        "Print (default) or apply the SQL for the two database roles (SPEC §10): an owner role that owns "
        "the schema and runs migrate, and an app role for the app, the cron commands and the product, "
        "which cannot TRUNCATE, disable triggers, set session_replication_role, or write a counter or "
        "the audit log except through the functions meant for it. Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner", default="billing_owner", help="Owner role (default billing_owner).")
        parser.add_argument("--app", default="billing_app", help="App role (default billing_app).")
        parser.add_argument("--schema", default="public")
        parser.add_argument("--apply", action="store_true", help="Run the SQL on the database (superuser).")

    def handle(self, *args, owner, app, schema, apply, **options):
        try:
            sql = db_roles_sql(owner=owner, app=app, database=connection.settings_dict["NAME"], schema=schema)
            if apply:
                db_roles_apply(owner=owner, app=app, schema=schema)
        except ValueError as exc:
            raise CommandError(str(exc), returncode=EXIT_USAGE)
        if apply:
            self.stdout.write(
                f"roles {owner} (owner) and {app} (app) applied to {connection.settings_dict['NAME']}"
            )
        else:
            self.stdout.write(sql)
