"""bench/dataset.py's keeping of a generated database (a 1M dataset takes half an hour to build)."""

import importlib.util

import pytest
from django.db import connection

from tests.conftest import ROOT
from tests.factories import CustomerFactory
from usage.models import Customer


def _dataset():
    spec = importlib.util.spec_from_file_location("bench_dataset_module", ROOT / "bench" / "dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.django_db
def test_reuse_refuses_a_database_generated_with_other_parameters_and_wipes_nothing():
    dataset = _dataset()
    kept = dataset.Params(1_000_000, periods=12)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {dataset.TABLE} (params text, started_at timestamptz, finished_at timestamptz)"
        )
        cursor.execute(f"INSERT INTO {dataset.TABLE} VALUES (%s, now(), now())", [kept.key()])
    customer = CustomerFactory()

    with pytest.raises(SystemExit) as refused:
        dataset.prepare(dataset.Params(1_000_000, periods=3), reuse=True)

    message = str(refused.value.code)
    assert "periods=12" in message and "periods=3" in message  # what it holds, what was asked
    assert "Nothing was changed" in message
    assert Customer.objects.filter(pk=customer.pk).exists()  # the schema was not rebuilt
    assert dataset.dataset_kept(kept)
