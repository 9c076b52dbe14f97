"""SQL that shipped in a migration is never edited (SPEC §13; CONTRIBUTING.md)."""

import hashlib

from tests.conftest import ROOT

# What shipped migrations read. Never edited (CONTRIBUTING.md): a change to a function goes into
# <app>/sql/<name>.sql, which every migrate installs; a schema change goes into a new migration.
FROZEN = {
    "usage/migrations/sql/0001_counters.sql": "da1528e58486627fb89044bf524e088171e915f985b058dc69f1935a7ee04aea",
    "usage/migrations/sql/0002_cascade.sql": "e17598757b193df94127ff2817c0f911af9f21e89a248bb3714930847892d8f0",
    "usage/migrations/sql/0005_periods.sql": "8705ee9f05a0146abd28460d2897d6348ea4c3aa845d8fc4329262836d43dce0",
    "usage/migrations/sql/0012_counter_write_grants.sql": "7ea38067a38bf54b1b852c84dab53f9eac7ed3951abebc8106a4a80ad30ebbbb",
    "billing/migrations/sql/0005_billing.sql": "a98dad44236ced92089d996b97ac6a4a737076ca1fddb645b3441332ea2664e1",
    "billing/migrations/sql/0007_cascade.sql": "8ea8628dffbe1bea29f2242cf33107ec85e272c3cd86365e60bd5daa119a253d",
}


def test_frozen_migration_sql_is_never_edited():
    frozen = {str(p.relative_to(ROOT)) for p in ROOT.glob("*/migrations/sql/*.sql")}
    assert frozen == set(FROZEN), "a new frozen file? add its hash here when its migration ships"
    for path, digest in FROZEN.items():
        assert hashlib.sha256((ROOT / path).read_bytes()).hexdigest() == digest, f"{path} was edited"
