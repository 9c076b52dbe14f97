from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent.parent / "sql"


class Migration(migrations.Migration):
    """Database-level ON DELETE CASCADE (Django only cascades in Python), after 0001 made the FKs."""

    dependencies = [("usage", "0001_initial")]

    operations = [
        migrations.RunSQL((SQL / "0002_cascade.sql").read_text(), reverse_sql=migrations.RunSQL.noop),
    ]
