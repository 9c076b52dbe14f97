"""`manage.py shell_plus` for support (README): models and the operations are loaded, on the real database."""

import pytest

from tests.conftest import run_manage

pytestmark = pytest.mark.django_db(transaction=True)


def test_shell_plus_loads_the_operations_support_uses(customer):
    command = (
        f"c = customer_resolve({customer.email.upper()!r}); d = customer_diagnose(customer=c); "
        "print(c.email, d.plan, len(drift_rows([c.pk])), Customer.objects.count(), len(trigger_health()) > 0)"
    )
    result = run_manage("shell_plus", "--quiet-load", "-c", command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [customer.email, "None", "0", "1", "True"]
