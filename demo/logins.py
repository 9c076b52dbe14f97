"""The demo's logins (SPEC §9): a superuser, and one Support and one Finance user to try the roles."""

from django.contrib.auth import get_user_model

from demo.data import DEMO_DOMAIN

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "billing-ops-demo"

DEMO_LOGINS = (
    # username, superuser, group
    (ADMIN_USERNAME, True, None),
    ("support", False, "Support"),
    ("finance", False, "Finance"),
)


def demo_logins_ensure() -> list[tuple[str, bool]]:
    """The demo's logins, created if missing: a superuser, one Support and one Finance user.

    An existing login is never changed (its password may no longer be the demo's).
    Returns (username, created now) for each.
    """
    from django.contrib.auth.models import Group

    User = get_user_model()
    logins = []
    for username, superuser, group in DEMO_LOGINS:
        if User.objects.filter(username=username).exists():
            logins.append((username, False))
            continue
        user = User.objects.create_user(
            username=username,
            email=f"{username}@{DEMO_DOMAIN}",
            password=ADMIN_PASSWORD,
            is_staff=True,
            is_superuser=superuser,
        )
        if group:
            user.groups.set(Group.objects.filter(name=group))
        logins.append((username, True))
    return logins
