"""Loading the demo safely (SPEC §9, §10): only into an empty database or one holding only the demo."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import connection, transaction

from billing.models import Plan
from demo.data import DEMO_DOMAIN, PLANS, DemoResult, demo_data_load
from demo.logins import DEMO_LOGINS, demo_logins_ensure
from usage.models import Customer

DEMO_REFUSED_FOREIGN = (
    "this database holds data that is not the demo's ({what}); demo_data only loads into an empty "
    "database or one holding only the demo (SPEC §10). Point DATABASE_URL at a database of its own."
)
DEMO_REFUSED_LOADED = "the demo data is already loaded; --if-empty keeps it, make clean-db starts over."


class DemoRefused(ValueError):
    """The database holds something demo_data must not touch."""


@dataclass
class DemoInstall:
    result: DemoResult | None  # None: the demo was already there and kept
    logins: list[tuple[str, bool]]  # (username, created now); existing logins are never changed


def demo_foreign_data() -> list[str]:
    """What in the database is not the demo's: customers outside its domain, plans it does not define,
    logins other than its own. Empty: the database is empty or holds only the demo."""
    User = get_user_model()
    found = []
    customers = Customer.objects.exclude(email__endswith=f"@{DEMO_DOMAIN}").count()
    if customers:
        found.append(f"{customers} customer{'s' if customers != 1 else ''} outside {DEMO_DOMAIN}")
    demo_plans = {code: name for code, name, *_ in PLANS}
    plans = [p.code for p in Plan.objects.only("code", "name") if demo_plans.get(p.code) != p.name]
    if plans:
        found.append(f"plan{'s' if len(plans) != 1 else ''} {', '.join(sorted(plans))}")
    users = User.objects.all()
    for username, *_ in DEMO_LOGINS:
        users = users.exclude(username=username, email=f"{username}@{DEMO_DOMAIN}")
    logins = users.count()
    if logins:
        found.append(f"{logins} login{'s' if logins != 1 else ''} the demo did not create")
    return found


@transaction.atomic
def demo_install(
    *, customers: int = 200, seed: int = 7, if_empty: bool = False, progress=None
) -> DemoInstall:
    """Load the demo into an empty database (or keep it, ``if_empty``) and create its missing logins.

    Refuses (DemoRefused, nothing written) a database holding anything but the demo: the demo's
    logins and published password must never appear beside real data.
    """
    # One demo_data at a time: two at once would both see an empty database.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('billing-ops demo_data'))")
    foreign = demo_foreign_data()
    if foreign:
        raise DemoRefused(DEMO_REFUSED_FOREIGN.format(what="; ".join(foreign)))
    result = None
    if not Customer.objects.exists():
        result = demo_data_load(customers=customers, seed=seed, progress=progress)
    elif not if_empty:
        raise DemoRefused(DEMO_REFUSED_LOADED)
    return DemoInstall(result=result, logins=demo_logins_ensure())
