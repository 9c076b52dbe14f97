"""Roles as groups (SPEC §7): Support fixes a customer's counts, Finance reads.

Superusers need no group: they can do everything, including reconciling every customer.
"""

from django.db import migrations

from billing.migrations._permissions import permissions_ensure

READ = ["view"]
MODELS = {
    "usage": [
        "customer",
        "project",
        "preset",
        "presetusage",
        "usageevent",
        "usagetracking",
        "reconciliationrun",
        "reconciliationrow",
    ],
    "billing": ["plan", "subscription"],
}
SUPPORT_EXTRA = [
    ("usage", "change_customer"),
    ("usage", "change_project"),
    ("usage", "reconcile_selection"),
]


def create_roles(apps, schema_editor):
    permissions_ensure(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def perms(pairs):
        return [
            Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in pairs
        ]

    read_all = [(app, f"view_{model}") for app, models in MODELS.items() for model in models]
    support, _ = Group.objects.get_or_create(name="Support")
    support.permissions.add(*perms(read_all + SUPPORT_EXTRA))
    finance, _ = Group.objects.get_or_create(name="Finance")
    finance.permissions.add(*perms(read_all))


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("usage", "0003_reconciliation_runs"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
