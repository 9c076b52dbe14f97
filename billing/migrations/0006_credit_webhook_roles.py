from django.contrib.auth.management import create_permissions
from django.db import migrations

GRANTS = {
    # Support grants goodwill credit and replays failed webhooks once their cause is fixed.
    "Support": ["view_creditgrant", "add_creditgrant", "view_creditdraw", "view_webhookevent", "replay_webhookevent"],
    # Finance reviews credit and the webhook inbox.
    "Finance": ["view_creditgrant", "view_creditdraw", "view_webhookevent"],
}


def credit_and_webhook_roles(apps, schema_editor):
    app_config = apps.get_app_config("billing")
    original, app_config.models_module = getattr(app_config, "models_module", None), True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = original
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GRANTS.items():
        permissions = Permission.objects.filter(content_type__app_label="billing", codename__in=codenames)
        for group in Group.objects.filter(name=name):
            group.permissions.add(*permissions)


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_credits_webhooks_consume"), ("billing", "0004_audit_roles")]

    operations = [migrations.RunPython(credit_and_webhook_roles, migrations.RunPython.noop)]
