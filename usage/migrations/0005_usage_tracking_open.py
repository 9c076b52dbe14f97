from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent / "sql"  # frozen, never edited (SPEC §13; CONTRIBUTING.md)


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0004_usage_events_covering_index"),
    ]

    operations = [
        migrations.RunSQL(
            (SQL / "0005_periods.sql").read_text(),
            reverse_sql="DROP FUNCTION IF EXISTS usage_tracking_open(uuid, timestamptz, timestamptz)",
        ),
    ]
