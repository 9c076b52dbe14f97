from django.db import migrations

from billing.migrations._permissions import groups_grant, permissions_ensure


def audit_log_readable(apps, schema_editor):
    permissions_ensure(apps, "billing")
    # Both read the audit log; Support changes plans (validated; a blocked downgrade needs a
    # superuser's override).
    groups_grant(apps, {"Support": ["view_auditlog", "change_subscription"], "Finance": ["view_auditlog"]})


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_audit_log"), ("billing", "0002_roles")]

    operations = [migrations.RunPython(audit_log_readable, migrations.RunPython.noop)]
