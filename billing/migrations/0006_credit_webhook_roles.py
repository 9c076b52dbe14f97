from django.db import migrations

from billing.migrations._permissions import groups_grant, permissions_ensure

GRANTS = {
    # Support grants goodwill credit and replays failed webhooks once their cause is fixed.
    "Support": [
        "view_creditgrant",
        "add_creditgrant",
        "view_creditdraw",
        "view_webhookevent",
        "replay_webhookevent",
    ],
    # Finance reviews credit and the webhook inbox.
    "Finance": ["view_creditgrant", "view_creditdraw", "view_webhookevent"],
}


def credit_and_webhook_roles(apps, schema_editor):
    permissions_ensure(apps, "billing")
    groups_grant(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_credits_webhooks_consume"), ("billing", "0004_audit_roles")]

    operations = [migrations.RunPython(credit_and_webhook_roles, migrations.RunPython.noop)]
