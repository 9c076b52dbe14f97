"""The mutation catalogue of `make mutants` cannot silently rot when code moves (scripts/mutants_catalogue.py)."""

import importlib.util
from collections import Counter

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("mutants_catalogue", ROOT / "scripts" / "mutants_catalogue.py")
catalogue = importlib.util.module_from_spec(spec)
spec.loader.exec_module(catalogue)
MUTANTS = catalogue.MUTANTS


def test_the_catalogue_covers_every_layer_with_unique_ids():
    assert len(MUTANTS) >= 40
    assert [i for i, n in Counter(m.id for m in MUTANTS).items() if n > 1] == []
    paths = {m.path for m in MUTANTS}
    for layer in (
        "usage/sql/",
        "billing/sql/",
        "triggers.py",
        "services/",
        "webhooks",
        "admin.py",
        "migrations/",
    ):
        assert any(layer in p for p in paths), layer


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_each_original_snippet_occurs_exactly_once_and_its_tests_exist(mutant):
    text = (ROOT / mutant.path).read_text()
    assert text.count(mutant.original) == 1, (
        f"{mutant.path} holds the snippet {text.count(mutant.original)} times"
    )
    assert mutant.replacement != mutant.original and mutant.description
    for test in mutant.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test
