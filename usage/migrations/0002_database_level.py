from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent / "sql"  # frozen, never edited (SPEC §13; CONTRIBUTING.md)


class Migration(migrations.Migration):
    """What Django's schema editor cannot declare: database-level cascades and counter-table storage."""

    dependencies = [("usage", "0001_initial")]

    operations = [
        migrations.RunSQL((SQL / "0002_cascade.sql").read_text(), reverse_sql=migrations.RunSQL.noop),
        # Counter rows are updated in place all day: room on each page keeps those updates HOT
        # (no new index entries, the gist exclusion index included).
        migrations.RunSQL(
            "ALTER TABLE usage_tracking SET (fillfactor = 70); ALTER TABLE presets SET (fillfactor = 80);",
            reverse_sql="ALTER TABLE usage_tracking RESET (fillfactor); ALTER TABLE presets RESET (fillfactor);",
        ),
    ]
