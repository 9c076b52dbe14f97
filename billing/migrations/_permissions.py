"""Shared by the role migrations (the loader skips modules whose name starts with "_")."""

from django.contrib.auth.management import create_permissions


def permissions_ensure(apps, *app_labels):
    """Create the apps' permissions now: Django normally adds them only after migrate has finished."""
    configs = (
        apps.get_app_configs() if not app_labels else [apps.get_app_config(label) for label in app_labels]
    )
    for app_config in configs:
        original, app_config.models_module = getattr(app_config, "models_module", None), True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = original


def groups_grant(apps, grants: dict[str, list[str]], app_label: str = "billing"):
    """Add ``app_label`` permissions (by codename) to the existing groups named in ``grants``."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in grants.items():
        permissions = list(
            Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
        )
        assert len(permissions) == len(codenames), f"missing permissions among {codenames}"
        for group in Group.objects.filter(name=name):
            group.permissions.add(*permissions)
