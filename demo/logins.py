"""The demo's logins (SPEC §9): a superuser, and one Support and one Finance user to try the roles."""

from django.contrib.auth import get_user_model

from demo.data import DEMO_DOMAIN

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "billing-ops-demo"


def demo_admin_ensure() -> tuple[str, str]:
    """The demo's logins: a superuser, plus one Support and one Finance user to try the roles.

    Passwords are reset on every run so the printed login always works.
    """
    from django.contrib.auth.models import Group

    User = get_user_model()
    for username, superuser, group in (
        (ADMIN_USERNAME, True, None),
        ("support", False, "Support"),
        ("finance", False, "Finance"),
    ):
        user, _ = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@{DEMO_DOMAIN}"}
        )
        user.is_staff = True
        user.is_superuser = superuser
        user.set_password(ADMIN_PASSWORD)
        user.save()
        if group:
            user.groups.set(Group.objects.filter(name=group))
    return ADMIN_USERNAME, ADMIN_PASSWORD
