from django.contrib.auth.management import create_permissions
from django.db import migrations


def audit_log_readable(apps, schema_editor):
    app_config = apps.get_app_config("billing")
    original, app_config.models_module = getattr(app_config, "models_module", None), True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = original
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.get(content_type__app_label="billing", codename="view_auditlog")
    for group in Group.objects.filter(name__in=["Support", "Finance"]):
        group.permissions.add(view)
    # Support changes plans (validated; a blocked downgrade needs a superuser's override).
    change = Permission.objects.get(content_type__app_label="billing", codename="change_subscription")
    for group in Group.objects.filter(name="Support"):
        group.permissions.add(change)


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_audit_log"), ("billing", "0002_roles")]

    operations = [migrations.RunPython(audit_log_readable, migrations.RunPython.noop)]
